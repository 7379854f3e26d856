"""A tiny shipped package for the fast tier: a random 2-layer Qwen2 (the project's tokenizer build,
a small recipe) packed by processor.package.write_package with a chosen temperature, prior bias,
min_confidence and drift profile, plus what each shipped number must be, computed here by hand.

Nothing is trained: the model's numbers are arbitrary, and that is enough, since the fast tier
checks that what ships is softmax((logits + bias) / T) with abstention below min_confidence and the
drift check against the packed profile, whatever the logits are. Built once per test session
(conftest ``tiny_package``) in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

# Chosen values, far from the identity (T = 1, no bias, no abstention) and from each other, so a
# path that drops one, swaps their order or flips a sign gives different numbers.
TEMPERATURE = 1.7
LOGIT_BIAS = (0.6, -0.9, 0.2)
PRIOR_ALPHA = 0.5  # recorded beside the bias, as the train loop does; not used by serving
MAX_LENGTH = 48
N_EVENTS = 120
PSI_WARN = 0.2
SEED = 1234
# Small enough to build in seconds on 2 busy cores; the architecture is the base's (Qwen2).
TOKENIZER = {"tokenizer_events": 1000, "tokenizer_generic_lines": 200, "vocab_size": 400}
ARCH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 128}
# The fresh head's logits are ~0.1 wide (init std 0.02): scaled so the probabilities spread out and the
# temperature and bias move them visibly.
HEAD_SCALE = 40.0


@dataclass
class TinyPackage:
    zip_path: Path
    base_dir: Path
    serving: dict[str, Any]
    events: list[dict[str, Any]]  # the first N_EVENTS unlabeled val events (id + features), in file order
    train_events: list[dict[str, Any]]  # the training split as loaded (what the profile was fitted on)
    # The classifier's logits per event, computed one event at a time (no padding); for several members,
    # the log of their averaged softmax (what the head then corrects, as for one member's logits).
    logits: np.ndarray
    expected: np.ndarray  # softmax((logits + bias) / T): what every prediction path must ship
    min_confidence: float

    @property
    def abstained(self) -> list[bool]:
        return (self.expected.max(axis=1) < self.min_confidence).tolist()

    @property
    def labels(self) -> list[str]:
        from processor.schema import LABELS

        return ["no_trade" if a else LABELS[i] for i, a in zip(self.expected.argmax(axis=1), self.abstained)]


def build_base(directory: Path) -> Path:
    """A random Qwen2 causal LM and the qwen-tiny tokenizer (small recipe), saved as a checkpoint."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from demo_kit.tiny_base import TinyRecipe, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(TinyRecipe(**TOKENIZER))
    torch.manual_seed(SEED)
    config = Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, **ARCH)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def hand_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """One forward pass per text, no batching and no padding: independent of predict_texts."""
    model.eval()
    with torch.no_grad():
        rows = [model(**tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0]
                for t in texts]
    return torch.stack(rows).double().numpy()


def add_random_member(model: Any, name: str, seed: int) -> None:
    """One more adapter on ``model`` (training.members), made different from the first: random LoRA B
    (peft starts it at zero) and its own random head."""
    with torch.no_grad():
        model.add_adapter(name, model.peft_config["default"])
        generator = torch.Generator().manual_seed(seed)
        for param_name, p in model.named_parameters():
            if f".{name}." in f".{param_name}." and ("lora_B" in param_name or "modules_to_save" in param_name):
                p.copy_(torch.randn(p.shape, generator=generator) * (0.02 * HEAD_SCALE if "score" in param_name else 0.5))
    model.set_adapter("default")


def member_logits(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    """hand_logits of each adapter of ``model``, turned into the log of their averaged softmax."""
    members = list(model.peft_config)
    if len(members) == 1:
        return hand_logits(model, tokenizer, texts)
    probs = []
    for name in members:
        model.set_adapter(name)
        probs.append(softmax(hand_logits(model, tokenizer, texts), axis=1))
    model.set_adapter(members[0])
    return np.log(np.mean(probs, axis=0))


def build(out_dir: Path, sample_dir: Path, members: int = 1) -> TinyPackage:
    from processor import drift
    from processor.data import load_events
    from processor.io import weights_sha256
    from processor.model import apply_lora, load_for_classification, member_name, resolve_model
    from processor.package import write_package
    from processor.schema import FEATURES, LABELS, schema_fingerprint
    from processor.serialize import Serializer

    resolved = resolve_model(str(build_base(out_dir / "base")))
    torch.manual_seed(SEED)
    base, tokenizer = load_for_classification(resolved, labels=LABELS)
    model = apply_lora(base, r=2, alpha=4, dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modules_to_save" in name and ".score." in f".{name}":
                p.mul_(HEAD_SCALE)
    for k in range(1, members):
        add_random_member(model, member_name(k), SEED + k)

    train = load_events(sample_dir / "train.jsonl")
    val = load_events(sample_dir / "val.jsonl", labeled=False)
    train_events = train[["id", *FEATURES]].to_dict(orient="records")
    # Enough events for a drift check (processor.drift.MIN_EVENTS), few enough to stay fast.
    events = val[["id", *FEATURES]].head(N_EVENTS).to_dict(orient="records")
    serializer = Serializer.fit(train)
    logits = member_logits(model, tokenizer, serializer.render_all(events))
    expected = softmax((logits + np.asarray(LOGIT_BIAS)) / TEMPERATURE, axis=1)
    tops = np.sort(expected.max(axis=1))
    # Midway between two events' tops about a third of the way up: some abstain, most do not, and
    # no top sits within float noise of the threshold.
    k = len(tops) // 3
    min_confidence = float((tops[k] + tops[k + 1]) / 2)
    assert tops[k + 1] - tops[k] > 1e-6, "two tops too close to put the threshold between them"

    serving = {
        "base": {"name": str(resolved.path), "base_id": resolved.base_id, "revision": resolved.revision,
                 "is_demo": False, "weights_sha256": weights_sha256(resolved.path)},
        "template": serializer.template,
        "serialization": serializer.to_dict(),
        "max_length": MAX_LENGTH,
        "labels": list(LABELS),
        "schema_fingerprint": schema_fingerprint(),
        "features": list(FEATURES),
        "feature_profile": drift.fit_profile(train, psi_warn=PSI_WARN),
        "calibration": {"temperature": TEMPERATURE},
        "prior_correction": {"alpha": PRIOR_ALPHA, "logit_bias": list(LOGIT_BIAS)},
        "min_confidence": min_confidence,
    }
    zip_path = write_package(out_dir / "model_final.zip", model=model, tokenizer=tokenizer, serving=serving,
                             metrics={"val_macro_f1": 0.0, "seed": SEED})
    return TinyPackage(zip_path=zip_path, base_dir=resolved.path, serving=serving, events=events,
                       train_events=train_events, logits=logits, expected=expected, min_confidence=min_confidence)
