"""Pipeline step 7: adapters + head + tokenizer + config -> ``model_final.zip``, and loading it back.

Zip layout::

    adapter/        peft adapter (LoRA weights + the trained ``score`` head via modules_to_save); a run of
                    training.members = K > 1 adds adapter/member-01/ ... (one per further member)
    tokenizer/      tokenizer files, exactly as used in training
    model_config.json   the classification model's config (labels, pad token id, ...)
    label_map.json      {"labels": [...], "label2id": {...}}
    serving.json        base model (name, id, revision, weights sha256), template, max length, fingerprint,
                        training feature profile (processor.drift),
                        calibration temperature, default min_confidence (abstention)
    metrics.json        the run's metrics
    MODEL_CARD.md       the model card (processor.model_card), written from metrics.json and serving.json
    MANIFEST.json       every other member with its sha256

The base weights are not copied (a real Qwen base is ~1 GB): they are resolved by name and checked
against the revision and weights digest recorded at training time.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from processor import model_card
from processor.cli import UserError
from processor.drift import DriftReport
from processor.drift import check as drift_check
from processor.calibrate import check_min_confidence, predicted_labels
from processor.config import SERVING_THREADS
from processor.io import atomic_target, sha256_bytes, sha256_file, weights_sha256
from processor.record import METRICS_FILE, SERVING_FILE, SERVING_FORMAT_VERSION, ServingSpec
from processor.schema import LABELS
from processor.serialize import Serializer

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = SERVING_FORMAT_VERSION  # the zip's layout; MANIFEST.json and serving.json carry it
# Torch's CPU threads for a loaded model, set by the serving host (mlflow models serve, predict CLI).
THREADS_ENV = "PROCESSOR_TORCH_THREADS"


class PackageError(UserError):
    """The zip is missing, tampered with, or does not match its base model: exit 2 with one line, not a
    traceback, wherever a command meets it (a served model's bundled base included)."""


def write_package(
    zip_path: Path,
    *,
    model: Any,
    tokenizer: Any,
    serving: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write the zip atomically (processor.io.atomic_target)."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        model.save_pretrained(stage / "adapter")
        tokenizer.save_pretrained(stage / "tokenizer")
        base_config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        (stage / "model_config.json").write_text(base_config.to_json_string(), encoding="utf-8")
        label_map = {"labels": list(LABELS), "label2id": {n: i for i, n in enumerate(LABELS)}}
        _dump(stage / "label_map.json", label_map)
        _dump(stage / SERVING_FILE, {"format_version": FORMAT_VERSION, **serving})
        _dump(stage / METRICS_FILE, metrics)
        card = model_card.render(metrics, {"format_version": FORMAT_VERSION, **serving})
        (stage / model_card.FILE_IN_ZIP).write_text(card, encoding="utf-8")
        members = sorted(p for p in stage.rglob("*") if p.is_file())
        manifest = {p.relative_to(stage).as_posix(): sha256_file(p) for p in members}
        _dump(stage / MANIFEST, {"format_version": FORMAT_VERSION, "files": manifest})
        with atomic_target(zip_path, suffix=".zip") as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for p in [*members, stage / MANIFEST]:
                    zf.write(p, p.relative_to(stage).as_posix())
    return zip_path


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")


def verify_package(zip_path: Path) -> dict[str, Any]:
    """Check the zip is intact: readable, no path traversal, every manifest sha256 matches, nothing
    unlisted. Returns the manifest; raises PackageError naming every problem."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise PackageError(f"{zip_path}: not found")
    problems: list[str] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            for name in names:
                pure = PurePosixPath(name)
                if pure.is_absolute() or ".." in pure.parts or "\\" in name or ":" in name:
                    problems.append(f"unsafe member path {name!r}")
            if MANIFEST not in names:
                raise PackageError(f"{zip_path}: no {MANIFEST}")
            manifest = json.loads(zf.read(MANIFEST))
            listed = manifest.get("files", {})
            for name, digest in listed.items():
                if name not in names:
                    problems.append(f"{name}: listed in the manifest but missing")
                elif sha256_bytes(zf.read(name)) != digest:
                    problems.append(f"{name}: sha256 does not match the manifest")
            for name in names:
                if name != MANIFEST and not name.endswith("/") and name not in listed:
                    problems.append(f"{name}: not listed in the manifest")
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{zip_path}: not a valid zip ({exc})") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{zip_path}: {MANIFEST} is not valid JSON ({exc})") from None
    if problems:
        raise PackageError(f"{zip_path}: " + "; ".join(problems))
    return manifest


@dataclass
class PackagedModel:
    """A trained classifier ready for prediction, loaded from ``model_final.zip``."""

    model: Any
    tokenizer: Any
    serving: dict[str, Any]
    metrics: dict[str, Any]
    labels: tuple[str, ...] = LABELS
    _workdir: Path | None = field(default=None, repr=False)

    @functools.cached_property
    def spec(self) -> ServingSpec:
        return ServingSpec.from_dict(self.serving)

    @functools.cached_property
    def serializer(self) -> Serializer:
        return Serializer.from_dict(self.spec.serialization)

    @property
    def temperature(self) -> float:
        """The calibration temperature fitted at training time; 1 (no change) for zips made before it."""
        return self.spec.head.temperature

    @property
    def min_confidence(self) -> float | None:
        """The abstention threshold the model was trained with (``trust.min_confidence``); None = never."""
        return self.spec.head.min_confidence

    def predict_proba(self, events: list[dict[str, Any]], batch_size: int = 64) -> np.ndarray:
        """The probabilities as they ship, columns in ``labels`` order: the classifier's softmax, the prior
        correction's logit bias added, then the calibration temperature (zips without them: unchanged)."""
        spec = self.spec
        texts = self.serializer.render_all(events)
        return spec.head.probabilities(predict_texts(self.model, self.tokenizer, texts, spec.max_length, batch_size))

    def predict_columns(self, events: list[dict[str, Any]], batch_size: int = 64,
                        min_confidence: float | None = None) -> dict[str, list[Any]]:
        """The output (see :func:`prediction_columns`) as columns; ``min_confidence`` None = the model's own."""
        threshold = self.min_confidence if min_confidence is None else min_confidence
        return prediction_columns([e.get("id") for e in events], self.predict_proba(events, batch_size), threshold,
                                  self.labels)

    def predict(self, events: list[dict[str, Any]], batch_size: int = 64, min_confidence: float | None = None
                ) -> list[dict[str, Any]]:
        """One row per event (see :func:`prediction_rows`); ``min_confidence`` None = the model's own."""
        return _rows(self.predict_columns(events, batch_size, min_confidence))

    def drift(self, events: Any) -> DriftReport:
        """PSI per feature of ``events`` (records or a frame) against the training profile in
        ``serving.json`` (:func:`processor.drift.check`; a package without a profile says so)."""
        return drift_check(self.spec.feature_profile, events)

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def prediction_columns(ids: list[Any], probs: np.ndarray, min_confidence: float | None,
                       labels: tuple[str, ...] = LABELS) -> dict[str, list[Any]]:
    """``id``, ``label``, ``p_<class>`` per class and ``abstained``, one list each (plain Python values):
    the output of every prediction path. An event whose top probability is below ``min_confidence``
    gets label no_trade and ``abstained: true``; its probabilities are left as they are."""
    names, abstained = predicted_labels(probs, check_min_confidence(min_confidence), labels)
    p = np.asarray(probs, dtype=np.float64)
    return {"id": list(ids), "label": list(names), **{f"p_{label}": p[:, i].tolist() for i, label in enumerate(labels)},
            "abstained": np.asarray(abstained, dtype=bool).tolist()}


def prediction_rows(ids: list[Any], probs: np.ndarray, min_confidence: float | None,
                    labels: tuple[str, ...] = LABELS) -> list[dict[str, Any]]:
    """:func:`prediction_columns` as one dict per event."""
    return _rows(prediction_columns(ids, probs, min_confidence, labels))


def _rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = tuple(columns)
    return [dict(zip(keys, values)) for values in zip(*columns.values())]


@torch.inference_mode()
def predict_texts(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities, batched; the same tokenization as training (truncation at max_length).

    Texts are batched by length (shortest first), so a batch pads to its own longest text rather than
    to the longest of a random mix; rows come back in the input order."""
    from processor.model import ensemble_probabilities

    if model.training:  # eval() walks every module: ~0.5 ms, a tenth of a one-event request
        model.eval()
    if not texts:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    # A model of several adapters (training.members) averages their softmax: one pass per adapter.
    return ensemble_probabilities(model, lambda: _softmax_batches(model, tokenizer, texts, max_length, batch_size))


def _softmax_batches(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")  # characters: a proxy for tokens
    chunks = []
    for start in range(0, len(order), batch_size):
        enc = tokenizer([texts[i] for i in order[start:start + batch_size]], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt").to(device)
        chunks.append(torch.softmax(model(**enc).logits.float(), dim=-1).cpu().numpy())
    probs = np.empty_like(chunks[0], shape=(len(texts), chunks[0].shape[1]))
    probs[order] = np.concatenate(chunks)  # back to the input order
    return probs


def inference_threads() -> int:
    """Torch's CPU threads for prediction: ``$PROCESSOR_TORCH_THREADS`` when set (the serving host's
    choice), else processor.config.SERVING_THREADS."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return SERVING_THREADS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise PackageError(f"{THREADS_ENV}={text!r}: expected a whole number of threads >= 1")
    return value


def load_packaged_model(zip_path: str | Path, *, device: str = "cpu", base_dir: str | Path | None = None,
                        merge: bool = True, threads: int | None = None) -> PackagedModel:
    """Verify the zip, rebuild base + adapter + head, and return a ready predictor.

    The base is resolved by the name and revision recorded in the zip, or read from ``base_dir`` (a
    copy of the base checkpoint shipped with an MLflow model); either way its weights must match the
    digest recorded at training time. ``merge`` folds the LoRA adapter into the base weights (peft
    ``merge_and_unload``): the same probabilities (to float rounding, tests/test_merge.py) from a plain
    model, without LoRA's extra matmuls in every layer (bench_serving's floor row). Sets torch's CPU threads for the process to ``threads``
    (None: :func:`inference_threads`)."""
    from peft import PeftModel

    from processor.model import ensemble_members, load_for_classification, quiet_peft, resolve_model

    torch.set_num_threads(inference_threads() if threads is None else threads)
    zip_path = Path(zip_path)
    verify_package(zip_path)
    workdir = Path(tempfile.mkdtemp(prefix="model_final-"))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(workdir)  # members were checked for traversal by verify_package
        serving = json.loads((workdir / SERVING_FILE).read_text(encoding="utf-8"))
        metrics = json.loads((workdir / METRICS_FILE).read_text(encoding="utf-8"))
        base = serving["base"]
        if base_dir is not None:
            resolved = resolve_model(str(Path(base_dir).resolve()))
        else:
            resolved = resolve_model(base["name"], revision=base.get("revision"))
        if base.get("weights_sha256") and weights_sha256(resolved.path) != base["weights_sha256"]:
            raise PackageError(
                f"{zip_path}: base model {base['name']!r} at {resolved.path} is not the one this adapter was "
                "trained on (weights sha256 differs)")
        base_model, _ = load_for_classification(resolved, labels=tuple(serving["labels"]))
        tokenizer = _load_tokenizer(workdir / "tokenizer")
        base_model.config.pad_token_id = tokenizer.pad_token_id
        with quiet_peft():
            model = PeftModel.from_pretrained(base_model, workdir / "adapter").to(device)
            # The other members of a training.members > 1 run: peft saved each in adapter/<name>/.
            for member in sorted(p for p in (workdir / "adapter").iterdir() if (p / "adapter_config.json").is_file()):
                model.load_adapter(member, adapter_name=member.name)
        if merge and not ensemble_members(model):  # several adapters cannot fold into one set of weights
            model = model.merge_and_unload()
        model.eval()
        return PackagedModel(model=model, tokenizer=tokenizer, serving=serving, metrics=metrics,
                             labels=tuple(serving["labels"]), _workdir=workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
