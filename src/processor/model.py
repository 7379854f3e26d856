"""Base models: resolve a name to a local checkpoint, load it for classification, add LoRA.

Three kinds of names are accepted by :func:`resolve_model`:

* an alias from :data:`MODEL_ALIASES` (``qwen-base``, ``qwen3-0.6b``, ``qwen-tiny``, ...);
* a Hugging Face hub id (``Qwen/Qwen2.5-0.5B``), looked up in the local HF cache first and downloaded
  only when the hub is reachable -- a machine without internet gets a :class:`ModelNotAvailableError`
  within seconds, never a hang or a stack trace;
* a local directory holding a ``save_pretrained`` checkpoint (``config.json`` + weights + tokenizer).

``qwen-tiny`` is the embedded demo base: a small model of the *same* Qwen2 architecture, with a
byte-level BPE tokenizer and weights built and pretrained locally (no download) the first time it is
asked for, then cached on disk. It goes through exactly the same loading code as a real Qwen
checkpoint, so the whole pipeline can run (and be tested) offline. It is not Qwen's weights.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

TINY_ALIAS = "qwen-tiny"
TINY_BASE_ID = "processor/qwen-tiny"
MODEL_ALIASES: dict[str, str] = {
    TINY_ALIAS: TINY_BASE_ID,
    "qwen-base": "Qwen/Qwen2.5-0.5B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
}

# Written into every qwen-tiny build; its presence marks a finished build (the directory is renamed
# into place only after it is written) and lets a copied directory still be recognised as the demo base.
BUILD_INFO_FILE = "processor_build.json"

# Files a classifier needs from a hub snapshot (skips .bin/.onnx/.gguf duplicates of the weights).
_HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
# How long the hub reachability probe may take before we conclude the machine is offline.
_HUB_PROBE_TIMEOUT_S = 5.0
_FALSY = {"", "0", "false", "no", "off"}


class ModelNotAvailableError(Exception):
    """The requested base model cannot be found or loaded; the message says why and what to do.

    CLI code catches this type and prints the message (no stack trace).
    """


@dataclass(frozen=True)
class ResolvedModel:
    """A base model name turned into a local directory to load from.

    ``revision`` is the HF-cache commit hash for hub models, the recipe hash for ``qwen-tiny``, and
    ``None`` for a plain local directory whose provenance is unknown.
    """

    name: str
    path: Path
    base_id: str
    revision: str | None
    is_demo: bool


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


def _offline_mode() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it again so a later setting counts too.
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _FALSY or bool(constants.HF_HUB_OFFLINE)


def _not_available_message(repo_id: str, revision: str | None, reason: str) -> str:
    at = f" (revision {revision})" if revision else ""
    return (
        f"Base model {repo_id!r}{at} is not available: it is not in the local Hugging Face cache and {reason}.\n"
        f"To use it, either\n"
        f"  - download it on a machine with internet: `huggingface-cli download {repo_id}` "
        f"(or `hf download {repo_id}`), then copy the Hugging Face cache (~/.cache/huggingface/hub) here, or\n"
        f"  - pass a local directory holding the checkpoint (config.json, weights, tokenizer) with --model DIR.\n"
        f"To run offline right now, use `--model {TINY_ALIAS}` (a small demo base built locally, not Qwen's weights)."
    )


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else path-shaped is meant as a directory.
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")  # Windows drive letter
    )


def _resolve_local_dir(name: str, directory: Path, revision: str | None) -> ResolvedModel:
    if not directory.is_dir():
        raise ModelNotAvailableError(f"Model path {str(directory)!r} is not a directory.")
    if not (directory / "config.json").is_file():
        raise ModelNotAvailableError(
            f"Model directory {str(directory)!r} has no config.json, so it is not a saved model checkpoint. "
            f"Pass a directory written by `save_pretrained` (config.json, weights, tokenizer files), "
            f"a hub id such as 'Qwen/Qwen2.5-0.5B', or `--model {TINY_ALIAS}`."
        )
    directory = directory.resolve()
    base_id, known_revision, is_demo = str(directory), None, False
    build_info = directory / BUILD_INFO_FILE
    if build_info.is_file():
        info = json.loads(build_info.read_text(encoding="utf-8"))
        base_id, known_revision, is_demo = info["base_id"], info["recipe_hash"], bool(info["is_demo"])
    elif directory.parent.name == "snapshots" and directory.parent.parent.name.startswith("models--"):
        # A snapshot folder inside an HF cache: the folder name is the commit hash.
        base_id = directory.parent.parent.name.removeprefix("models--").replace("--", "/")
        known_revision = directory.name
    if revision is not None and known_revision is not None and revision != known_revision:
        raise ModelNotAvailableError(
            f"Model directory {str(directory)!r} holds revision {known_revision}, not the requested {revision}."
        )
    return ResolvedModel(name=name, path=directory, base_id=base_id, revision=known_revision, is_demo=is_demo)


def _resolve_hub(name: str, repo_id: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import HfApi, snapshot_download

    try:
        path = snapshot_download(
            repo_id, revision=revision, local_files_only=True, allow_patterns=_HUB_ALLOW_PATTERNS
        )
    except Exception as cache_miss:  # not cached (or an invalid id): fall through to the hub
        logger.debug("%s not in the local HF cache: %s", repo_id, cache_miss)
    else:
        return _checked_snapshot(name, repo_id, Path(path))

    if _offline_mode():
        raise ModelNotAvailableError(
            _not_available_message(repo_id, revision, "HF_HUB_OFFLINE is set, so it was not downloaded")
        )
    # snapshot_download's own HTTP client has no timeout; a short probe first makes an unreachable hub
    # fail in seconds instead of hanging on a silently dropped connection.
    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=_HUB_PROBE_TIMEOUT_S)
    except Exception as err:
        raise ModelNotAvailableError(
            _not_available_message(
                repo_id, revision, f"could not be downloaded ({type(err).__name__}: {_first_line(err)})"
            )
        ) from None
    try:
        logger.info("downloading %s@%s from the Hugging Face hub", repo_id, info.sha)
        path = snapshot_download(repo_id, revision=info.sha, allow_patterns=_HUB_ALLOW_PATTERNS)
    except Exception as err:
        raise ModelNotAvailableError(
            _not_available_message(
                repo_id, revision, f"the download failed ({type(err).__name__}: {_first_line(err)})"
            )
        ) from None
    return _checked_snapshot(name, repo_id, Path(path))


def _checked_snapshot(name: str, repo_id: str, path: Path) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"The cached snapshot of {repo_id!r} at {str(path)!r} has no config.json (incomplete download?). "
            f"Re-download it with `huggingface-cli download {repo_id}`."
        )
    return ResolvedModel(name=name, path=path, base_id=repo_id, revision=path.name, is_demo=False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no details"


def resolve_model(name: str, *, revision: str | None = None) -> ResolvedModel:
    """Turn an alias, hub id or local directory into a local checkpoint directory.

    Raises :class:`ModelNotAvailableError` (with a message fit for the user) when the model is not in the
    local HF cache and cannot be downloaded, or when a directory is not a checkpoint.
    """
    if not name or not name.strip():
        raise ModelNotAvailableError("No model name given: pass an alias (e.g. qwen-tiny), a hub id or a directory.")
    target = MODEL_ALIASES.get(name, name)
    if target == TINY_BASE_ID:
        recipe = TinyRecipe()
        if revision is not None and revision != recipe.recipe_hash():
            raise ModelNotAvailableError(
                f"{TINY_ALIAS} revision {revision} was requested but this version of processor builds "
                f"revision {recipe.recipe_hash()} (a different recipe or library versions)."
            )
        path = build_qwen_tiny(recipe=recipe)
        return ResolvedModel(name=name, path=path, base_id=TINY_BASE_ID, revision=recipe.recipe_hash(), is_demo=True)
    local = Path(target).expanduser()
    if local.exists() or _looks_like_path(target):
        if not local.exists():
            raise ModelNotAvailableError(
                f"Model directory {target!r} does not exist (and it is not a known alias: {', '.join(MODEL_ALIASES)})."
            )
        return _resolve_local_dir(name, local, revision)
    return _resolve_hub(name, target, revision)


# --------------------------------------------------------------------------------------------------
# Loading for classification + LoRA
# --------------------------------------------------------------------------------------------------

# Right padding: real tokens keep positions 0..n-1 exactly as when run alone, and with causal attention
# they never see the pads; the Qwen head pools the rightmost non-pad token, which is the last real one.
PADDING_SIDE = "right"


def load_for_classification(
    resolved: ResolvedModel,
    *,
    labels: tuple[str, ...],
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``: a ``*ForSequenceClassification`` head over the base, last-token pooled.

    The ``score`` head is freshly initialised from the caller's torch RNG state (seed before calling).
    The tokenizer always has a pad token and pads on the right, and ``model.config.pad_token_id`` is set
    (Qwen's head refuses batches > 1 without it).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least two distinct names, got {labels!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(
            f"Could not load the tokenizer of {resolved.base_id!r} from {str(resolved.path)!r}: {_first_line(err)}"
        ) from None
    if tokenizer.pad_token is None:
        # Qwen base checkpoints pad with <|endoftext|> (their eos); reuse eos rather than adding a token,
        # which would change the vocabulary and need a freshly initialised embedding row.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelNotAvailableError(
                f"The tokenizer of {resolved.base_id!r} has no pad, eos or unk token to pad batches with."
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = PADDING_SIDE

    try:
        with _quiet_load_report():
            model, loading_info = AutoModelForSequenceClassification.from_pretrained(
                resolved.path,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                pad_token_id=tokenizer.pad_token_id,
                dtype=dtype,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelNotAvailableError(
            f"Could not load {resolved.base_id!r} from {str(resolved.path)!r} for sequence classification: "
            f"{_first_line(err)}"
        ) from None
    _check_loading_info(resolved, loading_info)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.pad_token_id = tokenizer.pad_token_id
        config.use_cache = False  # a classifier never decodes; the KV cache would only cost memory
    return model, tokenizer


# Only the fresh classification head may be missing from a causal-LM checkpoint.
_HEAD_PREFIX = "score."


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    # transformers logs a "LOAD REPORT" warning table for the expected missing `score` head on every load;
    # _check_loading_info reports what matters instead. A filter, not a level change: transformers reads
    # this logger's level to decide other checks.
    report_logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    report_logger.addFilter(drop)
    try:
        yield
    finally:
        report_logger.removeFilter(drop)


def _check_loading_info(resolved: ResolvedModel, info: dict[str, Any]) -> None:
    """Fail if base weights were missing (they would silently stay random); log the rest."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(_HEAD_PREFIX))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ModelNotAvailableError(
            f"The checkpoint {resolved.base_id!r} at {str(resolved.path)!r} lacks {len(missing)} base weights "
            f"({shown}); it does not match its config's architecture, so the model would be partly random."
        )
    unexpected = sorted(info.get("unexpected_keys", ()))
    logger.info(
        "loaded %s for classification: new head %s; unused checkpoint weights: %s",
        resolved.base_id,
        sorted(k for k in info.get("missing_keys", ()) if k.startswith(_HEAD_PREFIX)) or "none",
        unexpected or "none",
    )


def apply_lora(
    model: Any,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: str | list[str] = "all-linear",
) -> Any:
    """Wrap ``model`` with LoRA adapters; the ``score`` head is fully trained and saved with the adapter.

    Returns a ``peft.PeftModel``. Raises ``RuntimeError`` if the head did not end up trainable (it is
    freshly initialised, so an untrained head would make the classifier random).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if r <= 0:
        raise ValueError(f"LoRA rank r must be > 0, got {r}")
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        # peft adds "classifier"/"score" for SEQ_CLS itself; naming Qwen's head explicitly keeps that true
        # even if peft's list changes.
        modules_to_save=["score"],
    )
    peft_model = get_peft_model(model, config)
    head_trainable = [
        n for n, p in peft_model.named_parameters() if p.requires_grad and ".score." in f".{n}" and "modules_to_save" in n
    ]
    if not head_trainable:
        raise RuntimeError("LoRA setup did not make the classification head `score` trainable (modules_to_save)")
    return peft_model


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> float:
    """Mean number of tokens per text, as the model sees it (special tokens included, no padding)."""
    if len(texts) == 0:
        raise ValueError("count_tokens needs at least one text")
    encoded = tokenizer(list(texts), add_special_tokens=True, padding=False, truncation=False)["input_ids"]
    return float(np.mean([len(ids) for ids in encoded]))


# --------------------------------------------------------------------------------------------------
# qwen-tiny: the embedded demo base
# --------------------------------------------------------------------------------------------------

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

    Defaults are sized for a ~1 minute build on 2 CPU cores.
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
    pretrain_steps: int = 400
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

    def recipe_hash(self) -> str:
        """Short, stable hash of the recipe, the corpus generator output and the library versions."""
        payload = json.dumps(
            {"recipe": asdict(self), "corpus_sha256": _corpus_fingerprint(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _library_versions() -> tuple[tuple[str, str], ...]:
    import tokenizers
    import transformers

    return (("tokenizers", tokenizers.__version__), ("torch", torch.__version__), ("transformers", transformers.__version__))


def _event_texts(n: int, seed: int) -> list[str]:
    from processor.sample_data import sample_features
    from processor.serialize import render_events

    # Bins fitted on the synthetic events themselves: the tokenizer and the pretraining see every
    # bin word, whatever edges a user's training split later gives them.
    return render_events(sample_features(n, np.random.default_rng(seed)))


def _tokenizer_corpus(recipe: TinyRecipe) -> list[str]:
    rng_seed = recipe.seed + 1
    return _event_texts(recipe.tokenizer_events, rng_seed) + _generic_text(
        recipe.tokenizer_generic_lines, np.random.default_rng(recipe.seed + 2)
    )


def _pretrain_corpus(recipe: TinyRecipe) -> list[str]:
    """Serialized unlabeled events in template order, exactly as the classifier will read them.

    (Writing a share of them with their fields in random order, an any-order LM objective, was tried
    and made LoRA fine-tuning worse: val macro-F1 0.53-0.67 against 0.65-0.73 over 3 seeds.)
    """
    return _event_texts(recipe.pretrain_events, recipe.seed + 3)


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


def _weights_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _model_card(info: dict[str, Any]) -> str:
    recipe = info["recipe"]
    versions = dict(recipe["versions"])
    return f"""# qwen-tiny (processor demo base) -- NOT Qwen's weights

This is a **demo base model** built locally by `processor.model.build_qwen_tiny`, so that the train loop
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
   (`processor.sample_data.sample_features`, serialized with template `{info['template']}`) plus
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

    from processor.serialize import TEMPLATE_NAME

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
        "template": TEMPLATE_NAME,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "lm_losses": losses,
        "lm_loss_first": losses[0],
        "lm_loss_final": losses[-1],
        "tokens_per_event": count_tokens(tokenizer, _event_texts(1000, recipe.seed + 4)),
        "weights_sha256": _weights_sha256(directory),
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
        logger.info("building the qwen-tiny demo base into %s (once; about a minute on 2 CPU cores)", target)
        try:
            with _isolated_build(recipe.torch_threads):
                _build_into(staging, recipe, recipe_hash)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
