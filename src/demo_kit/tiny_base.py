"""``qwen-tiny``, the embedded demo base: a small Qwen2-architecture causal LM whose byte-level BPE
tokenizer and weights are built and pretrained locally (no model hub), deterministically, and cached.

Its recipe (:class:`TinyRecipe`) names the cache directory; the same recipe and library versions give
byte-identical weights. It is not Qwen's weights: :func:`processor.model.resolve_model` finds it through
:data:`processor.model.LOCAL_BUILDERS` (by name, never a static import) and hands it to the same
loading code as a real Qwen checkpoint, so the whole pipeline runs (and is tested) offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from processor.io import weights_sha256
from processor.names import BUILD_INFO_FILE, TINY_BASE_ID
from processor.serialize import TEMPLATE_NAME

logger = logging.getLogger(__name__)


# Generic words and numbers for the tokenizer corpus, so that it also covers text that is not in the
# event template (other sessions, symbols, free text) with sensible merges rather than bare bytes.
_GENERIC_WORDS = (
    "the a an of to in on at for with from by and or not is are was be this that it as price market "
    "trend bullish bearish long short trade no buy sell entry exit stop loss take profit risk reward "
    "high low open close volume range gap fair value break change character structure swing leg wave "
    "strength pullback retest session asia london new york tokyo sydney frankfurt chicago monday tuesday "
    "wednesday thursday friday hour minute day week month year time event label model data train test "
    "true false yes none null up down left right first last next previous index average true range "
    "eurusd gbpusd usdjpy xauusd us500 btcusd ethusd nasdaq dax spx gold oil bond rate signal filter"
).split()
_GENERIC_PUNCT = (" ", " ", " ", ", ", ". ", ": ", "=", " - ", "; ", " (", ") ", "/", "_", "\n")


def _generic_text(n_lines: int, rng: np.random.Generator) -> list[str]:
    """Deterministic filler: word salad mixed with numbers in the formats events and people use."""
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(int(rng.integers(4, 14))):
            kind = rng.random()
            if kind < 0.6:
                word = str(rng.choice(_GENERIC_WORDS))
                parts.append(word.capitalize() if rng.random() < 0.15 else word)
            elif kind < 0.75:
                parts.append(str(int(rng.integers(-1000, 100000))))
            elif kind < 0.9:
                parts.append(f"{rng.lognormal(0, 3):.{int(rng.integers(1, 6))}g}")
            else:
                parts.append(f"{rng.random():.{int(rng.integers(1, 5))}f}")
            parts.append(str(rng.choice(_GENERIC_PUNCT)))
        lines.append("".join(parts).strip())
    return lines


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines a qwen-tiny build; its hash names the cache directory.

    Defaults are sized for a build of well under a minute on 2 CPU cores.
    """

    tokenizer_events: int = 20_000
    tokenizer_generic_lines: int = 4_000
    vocab_size: int = 1024
    # 64 x 2 layers: measured on 2 busy cores, LoRA fine-tuning of this size reaches the same val
    # macro-F1 band as 128 x 4 (0.71 vs 0.75 on the default sample data) in a fraction of the time.
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    pretrain_events: int = 12_800
    # 200 steps (half a pass over the corpus), not 400: a base that has learned the template less
    # firmly fine-tunes better on the hard rule set (v3 selection runs 0.744 -> 0.761, v1/v2 a tie;
    # 100 steps tied 200, 50 and 1,600 were worse: docs/quality.md, issue 27).
    pretrain_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    seed: int = 20_240_501
    # CPU kernels split work by thread count, and a different split gives different float sums: the
    # build runs on a fixed number of threads so that other machines rebuild the same weights.
    torch_threads: int = 2
    # Library versions are part of the recipe: the same code on another torch/transformers may not
    # produce bit-identical weights, and then it must not share a revision.
    versions: tuple[tuple[str, str], ...] = field(default_factory=lambda: _library_versions())
    # The event template of the tokenizer and pretraining corpora (processor.serialize): the tokenizer
    # learns the words of the template the classifier will read, one token per feature value.
    template: str = TEMPLATE_NAME

    def recipe_hash(self) -> str:
        """Short, stable hash of the recipe, the corpus generator output and the library versions."""
        # The template is in the hash through the corpus it renders; leaving the field itself out keeps
        # the revisions of builds from before the field existed.
        recipe = {k: v for k, v in asdict(self).items() if k != "template"}
        payload = json.dumps({"recipe": recipe, "corpus_sha256": _corpus_fingerprint(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _library_versions() -> tuple[tuple[str, str], ...]:
    import tokenizers
    import transformers

    return (("tokenizers", tokenizers.__version__), ("torch", torch.__version__), ("transformers", transformers.__version__))


def _event_texts(n: int, seed: int, template: str) -> list[str]:
    from demo_kit.sample_data import sample_features
    from processor.serialize import render_events

    # Bins fitted on the synthetic events themselves: the tokenizer and the pretraining see every
    # bin word, whatever edges a user's training split later gives them.
    return render_events(sample_features(n, np.random.default_rng(seed)), template=template)


def _tokenizer_corpus(recipe: TinyRecipe) -> list[str]:
    rng_seed = recipe.seed + 1
    return _event_texts(recipe.tokenizer_events, rng_seed, recipe.template) + _generic_text(
        recipe.tokenizer_generic_lines, np.random.default_rng(recipe.seed + 2)
    )


def _pretrain_corpus(recipe: TinyRecipe) -> list[str]:
    """Serialized unlabeled events in template order, exactly as the classifier will read them.

    (Writing a share of them with their fields in random order, an any-order LM objective, was tried
    and made LoRA fine-tuning worse: val macro-F1 0.53-0.67 against 0.65-0.73 over 3 seeds.)
    """
    return _event_texts(recipe.pretrain_events, recipe.seed + 3, recipe.template)


_fingerprints: dict[TinyRecipe, str] = {}


def _corpus_fingerprint(recipe: TinyRecipe) -> str:
    # Hashing the generated text (not just the seeds) means a change to sample_features or to the
    # event template yields a new revision and a rebuild, instead of a stale cached base.
    key = replace(recipe, versions=())
    if key not in _fingerprints:
        digest = hashlib.sha256()
        for text in _tokenizer_corpus(recipe) + _pretrain_corpus(recipe):
            digest.update(text.encode("utf-8") + b"\n")
        _fingerprints[key] = digest.hexdigest()
    return _fingerprints[key]


def default_cache_dir() -> Path:
    """``$PROCESSOR_CACHE_DIR`` if set, else ``~/.cache/processor``."""
    env = os.environ.get("PROCESSOR_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "processor"


def build_tiny_tokenizer(recipe: TinyRecipe | None = None) -> Any:
    """Train the qwen-tiny byte-level BPE tokenizer (deterministic) and wrap it as a ``Qwen2Tokenizer``.

    Pre-tokenization is Qwen2's own (its split regex puts every digit in its own token, then byte-level
    mapping), so any string -- unseen numbers, other languages -- encodes without an unknown token.
    """
    from tokenizers import pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    recipe = recipe or TinyRecipe()
    eos = "<|endoftext|>"
    # An empty Qwen2Tokenizer carries Qwen's normalizer, pre-tokenizer and decoder; train its BPE model.
    backend = Qwen2Tokenizer().backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        min_frequency=2,
        special_tokens=[eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tokenizer_corpus(recipe), trainer=trainer)
    bpe = json.loads(backend.to_str())["model"]
    return Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=[tuple(m) for m in bpe["merges"]],
        eos_token=eos,
        pad_token=eos,
        unk_token=eos,
        model_max_length=recipe.max_position_embeddings,
    )


@contextmanager
def _isolated_build(threads: int) -> Iterator[None]:
    """Fixed torch thread count during the build; the caller's RNG streams and threads are restored.

    Trainer reseeds torch/numpy/random globally; the caller's later draws (e.g. the score head init)
    must not depend on whether qwen-tiny was already cached.
    """
    py_state, np_state, caller_threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        try:
            torch.set_num_threads(threads)
            yield
        finally:
            torch.set_num_threads(caller_threads)
            random.setstate(py_state)
            np.random.set_state(np_state)


def _pretrain(model: Any, tokenizer: Any, recipe: TinyRecipe, work_dir: Path) -> list[float]:
    """Short causal-LM pass over unlabeled synthetic events; returns the logged training losses."""
    from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainingArguments

    texts = _pretrain_corpus(recipe)
    # One event per sequence, ended by eos, as the classifier will see events one at a time.
    dataset = [{"input_ids": ids} for ids in tokenizer([t + tokenizer.eos_token for t in texts])["input_ids"]]
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=recipe.batch_size,
        max_steps=recipe.pretrain_steps,
        learning_rate=recipe.learning_rate,
        warmup_steps=max(1, int(recipe.warmup_ratio * recipe.pretrain_steps)),
        lr_scheduler_type="cosine",
        weight_decay=recipe.weight_decay,
        logging_steps=max(1, recipe.pretrain_steps // 20),
        save_strategy="no",
        report_to=[],
        seed=recipe.seed,
        data_seed=recipe.seed,
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def _model_card(info: dict[str, Any]) -> str:
    recipe = info["recipe"]
    versions = dict(recipe["versions"])
    return f"""# qwen-tiny (processor demo base) -- NOT Qwen's weights

This is a **demo base model** built locally by `demo_kit.tiny_base.build_qwen_tiny`, so that the train loop
runs and can be tested offline. It uses the **Qwen2 architecture** (`Qwen2Config` / `Qwen2ForCausalLM`,
the same classes as Qwen2.5) but its tokenizer and weights were trained here from scratch on synthetic
data: it knows nothing but the event template. Results obtained with it say nothing about a real Qwen.

- base id: `{info['base_id']}`, recipe hash (revision): `{info['recipe_hash']}`
- built: {info['built_at']} in {info['build_seconds']:.1f} s (torch {versions['torch']},
  transformers {versions['transformers']}, tokenizers {versions['tokenizers']},
  {info['torch_threads']} torch threads)
- size: {info['parameters']:,} parameters; hidden {recipe['hidden_size']}, {recipe['num_hidden_layers']} layers,
  {recipe['num_attention_heads']} attention heads / {recipe['num_key_value_heads']} KV heads,
  MLP {recipe['intermediate_size']}, max positions {recipe['max_position_embeddings']}, tied embeddings
- weights sha256 (model.safetensors): `{info['weights_sha256']}`

## How it was built
1. **Tokenizer**: byte-level BPE (`tokenizers` BpeTrainer, Qwen2's pre-tokenizer: digits split one by one),
   vocabulary {info['vocab_size']} tokens (target {recipe['vocab_size']}), special token `<|endoftext|>`
   (eos and pad, as in Qwen base). Corpus: {recipe['tokenizer_events']:,} synthetic events
   (`demo_kit.sample_data.sample_features`, serialized with template `{info['template']}`) plus
   {recipe['tokenizer_generic_lines']:,} lines of generic words and numbers. Byte-level: no unknown tokens.
2. **Weights**: random init (seed {recipe['seed']}), then a causal-LM pass with transformers `Trainer`
   (`DataCollatorForLanguageModeling(mlm=False)`) over {recipe['pretrain_events']:,} unlabeled synthetic events
   (one event + eos per sequence; independent of any user's data): {recipe['pretrain_steps']} steps,
   batch {recipe['batch_size']}, lr {recipe['learning_rate']} (cosine, warmup {recipe['warmup_ratio']}),
   weight decay {recipe['weight_decay']}.
   LM loss: first logged {info['lm_loss_first']:.4f}, final logged {info['lm_loss_final']:.4f} nats/token.
3. Mean tokens per serialized event: {info['tokens_per_event']:.2f}.

The full recipe is in `{BUILD_INFO_FILE}`. Rebuilding with the same recipe and library versions (the build
pins its torch thread count; a different CPU instruction set may still change the last bits) gives the same
tokenizer and weights.
"""


def _build_into(directory: Path, recipe: TinyRecipe, recipe_hash: str) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from processor.serialize import count_tokens

    started = time.perf_counter()
    tokenizer = build_tiny_tokenizer(recipe)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    model = Qwen2ForCausalLM(config)
    losses = _pretrain(model, tokenizer, recipe, directory / "_trainer")
    shutil.rmtree(directory / "_trainer", ignore_errors=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)

    info = {
        "base_id": TINY_BASE_ID,
        "recipe_hash": recipe_hash,
        "is_demo": True,
        "recipe": asdict(recipe),
        "template": recipe.template,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "lm_losses": losses,
        "lm_loss_first": losses[0],
        "lm_loss_final": losses[-1],
        "tokens_per_event": count_tokens(tokenizer, _event_texts(1000, recipe.seed + 4, recipe.template)),
        "weights_sha256": weights_sha256(directory),
        "torch_threads": torch.get_num_threads(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": time.perf_counter() - started,
    }
    (directory / "README.md").write_text(_model_card(info), encoding="utf-8")
    # Written last: its presence is what marks the build as complete.
    (directory / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


def build_qwen_tiny(cache_dir: Path | None = None, *, recipe: TinyRecipe | None = None) -> Path:
    """Return the directory of the qwen-tiny demo base, building it first if it is not cached.

    Safe to call from several processes at once: one builds (under a file lock, into a temporary
    directory renamed into place), the others wait and reuse the result.
    """
    from filelock import FileLock

    recipe = recipe or TinyRecipe()
    recipe_hash = recipe.recipe_hash()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"qwen-tiny-{recipe_hash}"
    if (target / BUILD_INFO_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"qwen-tiny-{recipe_hash}.lock")):
        if (target / BUILD_INFO_FILE).is_file():  # another process built it while we waited
            return target
        if target.exists():  # leftover of a crashed build from before the atomic rename existed
            shutil.rmtree(target)
        staging = root / f".qwen-tiny-{recipe_hash}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        logger.info("building the qwen-tiny demo base into %s (once; seconds on 2 CPU cores)", target)
        try:
            with _isolated_build(recipe.torch_threads):
                _build_into(staging, recipe, recipe_hash)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_base(revision: str | None, template: str | None) -> tuple[Path, str]:
    """:data:`processor.model.LOCAL_BUILDERS`' entry for qwen-tiny: the build of ``template``'s recipe, or of
    the recipe whose hash is ``revision`` (a package records the revision, not the template, of the base it
    was trained on), as (directory, revision)."""
    from processor.model import TINY_ALIAS, ModelNotAvailableError
    from processor.serialize import BINNED_TEMPLATES

    candidates = [template] if template else [TEMPLATE_NAME, *(t for t in BINNED_TEMPLATES if t != TEMPLATE_NAME)]
    for candidate in candidates:
        recipe = TinyRecipe(template=candidate)
        if revision is None or revision == recipe.recipe_hash():
            return build_qwen_tiny(recipe=recipe), recipe.recipe_hash()
    raise ModelNotAvailableError(
        f"{TINY_ALIAS} revision {revision} was requested but this version of the demo kit builds "
        f"{', '.join(TinyRecipe(template=t).recipe_hash() for t in candidates)} "
        f"(for template {', '.join(candidates)}; a different recipe or library versions)."
    )
