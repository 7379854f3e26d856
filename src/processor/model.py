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
checkpoint, so the whole pipeline can run (and be tested) offline. It is not Qwen's weights. The demo kit
builds it (``demo_kit.tiny_base``); this module reaches the builder by name, :data:`LOCAL_BUILDERS`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from processor.cli import UserError, first_line, parse_bool
from processor.names import BUILD_INFO_FILE, TINY_BASE_ID
from processor.quiet import no_weight_progress

logger = logging.getLogger(__name__)

TINY_ALIAS = "qwen-tiny"
MODEL_ALIASES: dict[str, str] = {
    TINY_ALIAS: TINY_BASE_ID,
    "qwen-base": "Qwen/Qwen2.5-0.5B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
}


# Files a classifier needs from a hub snapshot (skips .bin/.onnx/.gguf duplicates of the weights).
_HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
# How long the hub reachability probe may take before we conclude the machine is offline.
_HUB_PROBE_TIMEOUT_S = 5.0


class ModelNotAvailableError(UserError):
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

    try:
        offline = parse_bool(os.environ.get("HF_HUB_OFFLINE", ""))
    except ValueError:
        offline = True  # set to something other than a boolean: better offline than reaching for the hub
    return offline or bool(constants.HF_HUB_OFFLINE)


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
                repo_id, revision, f"could not be downloaded ({type(err).__name__}: {first_line(err)})"
            )
        ) from None
    try:
        logger.info("downloading %s@%s from the Hugging Face hub", repo_id, info.sha)
        path = snapshot_download(repo_id, revision=info.sha, allow_patterns=_HUB_ALLOW_PATTERNS)
    except Exception as err:
        raise ModelNotAvailableError(
            _not_available_message(
                repo_id, revision, f"the download failed ({type(err).__name__}: {first_line(err)})"
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


# Bases built on this machine rather than downloaded, by base id -> "module:function", imported only when
# that base is asked for. The product names the demo kit's builder as text and never imports it: the train
# loop, serving and the gate do not depend on the demo (tests/test_architecture.py), while `--model
# qwen-tiny` and every package trained on it still resolve. A text entry rather than a package entry point:
# it needs no installed metadata, so a checkout on PYTHONPATH resolves it like an editable install.
# The function takes (revision, template) and returns (checkpoint directory, revision).
LOCAL_BUILDERS: dict[str, str] = {TINY_BASE_ID: "demo_kit.tiny_base:resolve_base"}


def local_builder(base_id: str) -> Callable[[str | None, str | None], tuple[Path, str]]:
    """The builder of a local base (:data:`LOCAL_BUILDERS`), imported now; a missing kit is a usage error."""
    module_name, _, function = LOCAL_BUILDERS[base_id].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise  # the kit is there but something it imports is not: not ours to explain away
        raise ModelNotAvailableError(
            f"{base_id} is built locally by the Python package {module_name.split('.')[0]!r}, which is not "
            f"importable here (install this project with `pip install -e .`, or put its src/ on PYTHONPATH)."
        ) from None
    return getattr(module, function)


def resolve_model(name: str, *, revision: str | None = None, template: str | None = None) -> ResolvedModel:
    """Turn an alias, hub id or local directory into a local checkpoint directory.

    ``template`` matters for ``qwen-tiny`` only: its tokenizer is built from the corpus of that event
    template (default: the one a given ``revision`` was built for, else the default template).
    Raises :class:`ModelNotAvailableError` (with a message fit for the user) when the model is not in the
    local HF cache and cannot be downloaded, or when a directory is not a checkpoint.
    """
    if not name or not name.strip():
        raise ModelNotAvailableError("No model name given: pass an alias (e.g. qwen-tiny), a hub id or a directory.")
    target = MODEL_ALIASES.get(name, name)
    if target in LOCAL_BUILDERS:
        path, built_revision = local_builder(target)(revision, template)
        return ResolvedModel(name=name, path=path, base_id=target, revision=built_revision, is_demo=True)
    local = Path(target).expanduser()
    if local.exists() or _looks_like_path(target):
        if not local.exists():
            raise ModelNotAvailableError(
                f"Model directory {target!r} does not exist (and it is not a known alias: {', '.join(MODEL_ALIASES)})."
            )
        return _resolve_local_dir(name, local, revision)
    return _resolve_hub(name, target, revision)


# --------------------------------------------------------------------------------------------------
# Precision: what a bf16 checkpoint (every real Qwen) becomes in training and serving
# --------------------------------------------------------------------------------------------------

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``training.device`` -> the device a run uses: ``auto`` is CUDA, else MPS, else the CPU. A device
    asked for by name that this machine lacks is a usage error, not a crash inside the Trainer."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available (use --device cpu or auto)")
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """``training.precision`` on ``device`` (cpu|cuda|mps, see :func:`resolve_device`) -> bf16|fp16|fp32.

    auto: bf16 on a CUDA GPU that has it (Ampere+), else fp32 -- on a CPU bf16 matmuls are slower than
    fp32, and fp16 without a GPU's loss scaling loses small gradients. Asking for what the device
    cannot do is a :class:`ModelNotAvailableError` (a usage error), not a crash inside the Trainer.
    """
    if precision == "auto":
        return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device != "cuda":
        raise ModelNotAvailableError(f"training.precision fp16 needs a CUDA GPU (the device is {device}); "
                                     "use fp32, or bf16 (CPU autocast)")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelNotAvailableError("training.precision bf16: this GPU has no bf16 (before Ampere); use fp16 or fp32")
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}")
    return precision


def load_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype to load base weights in for a resolved precision: half on a GPU (half the memory; the
    trainable LoRA weights and head are kept in fp32 by :func:`apply_lora`), fp32 on a CPU, where a bf16
    checkpoint is upcast at load and bf16, when asked for, is autocast only."""
    if device == "cpu":
        return torch.float32
    return _HALF.get(precision, torch.float32)


def precision_args(precision: str) -> dict[str, bool]:
    """``TrainingArguments`` mixed-precision flags for a resolved precision (bf16 on a CPU also needs
    ``use_cpu=True``, which the device arguments give)."""
    if precision in _HALF:
        return {precision: True}
    return {}


def checkpointing_args(enabled: bool) -> dict[str, Any]:
    """``TrainingArguments`` for ``training.gradient_checkpointing``. Non-reentrant checkpointing: the
    reentrant kind computes no gradient for LoRA weights when the frozen embeddings need none."""
    if not enabled:
        return {}
    return {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}


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
            f"Could not load the tokenizer of {resolved.base_id!r} from {str(resolved.path)!r}: {first_line(err)}"
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
        with _quiet_load_report(), no_weight_progress():
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
            f"{first_line(err)}"
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


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` property when it wraps a model,
    a FutureWarning on every run and every load: harmless, and peft's to change, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


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
    with quiet_peft():
        peft_model = get_peft_model(model, config)
    # A half-precision base (bf16/fp16 on a GPU) would make the fresh head's copy half too; the optimizer
    # and fp16's loss scaling need fp32 trainable weights (peft already makes the LoRA weights fp32).
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
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


# --------------------------------------------------------------------------------------------------
# Members: K adapters on one base (training.members), their softmax averaged
# --------------------------------------------------------------------------------------------------
def member_name(k: int) -> str:
    """The adapter name of member ``k``: peft's "default" for the first, then "member-01", ... (two digits,
    so a package's sorted adapter directories come back in training order)."""
    return "default" if k == 0 else f"member-{k:02d}"


def ensemble_members(model: Any) -> list[str]:
    """The adapters whose softmax ``model`` averages, in training order; [] for one adapter or none."""
    config = getattr(model, "peft_config", None)
    return list(config) if isinstance(config, dict) and len(config) > 1 else []


def ensemble_probabilities(model: Any, softmax_of_active: Callable[[], Any]) -> Any:
    """``softmax_of_active()`` (the active adapter's softmax probabilities) averaged over the members of
    ``model``; called once, as it is, for a model of one adapter. The first adapter is active after."""
    import numpy as np

    members = ensemble_members(model)
    if not members:
        return softmax_of_active()
    try:
        probs = []
        for name in members:
            model.set_adapter(name)
            probs.append(softmax_of_active())
        return np.mean(probs, axis=0).astype(probs[0].dtype)
    finally:
        model.set_adapter(members[0])
