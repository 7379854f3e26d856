"""The model card: in every model_final.zip and, with the gate's verdict, beside every registered version.
Its numbers are the run's own (metrics.json), so the tests read them from there, never hard-code them."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from processor import gate, model_card
from processor.package import verify_package
from processor.schema import LABELS


def _zip_member(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name).decode("utf-8")


def _numbers_of(m: dict, serving: dict) -> list[str]:
    """Every figure a reader of the card must find, formatted as the card formats them, each taken
    from its source: metrics.json, and serving.json for what ships (the temperature)."""
    ci = m["bootstrap"]["val_macro_f1"]
    out = [f"val macro-F1 {m['val_macro_f1']:.3f} (CI {ci['low']:.3f}-{ci['high']:.3f})",
           f"accuracy {m['val_accuracy']:.3f}", m["data"]["train_sha256"][:16], m["data"]["val_sha256"][:16],
           f"{m['data']['n_train']} events", f"{m['data']['n_val']} events",
           f"best epoch {m['best_epoch']} of {m['epochs_run']}", f"{m['tokens_per_event']:.1f} tokens per event"]
    out += [f"{name} {m['per_class'][name]['f1']:.3f}" for name in LABELS]
    out += [f"{name} {b['val_macro_f1']:.3f}" for name, b in m["baselines"].items()]
    cal = m["calibration"]
    out += [f"temperature {serving['calibration']['temperature']:.3f};",
            f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}",
            f"Brier {cal['brier_before']:.3f} -> {cal['brier_after']:.3f}",
            f"largest {m['drift']['max_psi']:.3f}"]
    mc = serving.get("min_confidence")
    out.append("min_confidence none (never abstains)" if mc is None else f"min_confidence {mc:g} by default")
    return out


# Every figure distinct from every other, so a card that takes one from the wrong key shows the wrong one.
DISTINCT_METRICS = {
    "val_macro_f1": 0.611, "val_accuracy": 0.622, "best_epoch": 3, "epochs_run": 9, "tokens_per_event": 17.25,
    "bootstrap": {"confidence": 0.95, "val_macro_f1": {"low": 0.501, "high": 0.702},
                  "f1": {n: {"low": 0.1 + i / 10, "high": 0.91 - i / 10} for i, n in enumerate(LABELS)}},
    "per_class": {n: {"f1": 0.41 + i / 7} for i, n in enumerate(LABELS)},
    "baselines": {"majority": {"val_macro_f1": 0.177}, "hist_gradient_boosting": {"val_macro_f1": 0.733},
                  "tuned_gbdt": {"val_macro_f1": 0.744, "cv_macro_f1": 0.755, "params": {"num_leaves": 7}}},
    "data": {"train_sha256": "a" * 64, "val_sha256": "b" * 64, "n_train": 1041, "n_val": 261},
    "calibration": {"method": "temperature_scaling", "temperature": 1.234, "ece_before": 0.111, "ece_after": 0.022,
                    "brier_before": 0.333, "brier_after": 0.444},
    "abstention": {"min_confidence": 0.55},
    "drift": {"max_psi": 0.0777},
}
DISTINCT_SERVING = {"base": {"name": "qwen-tiny", "is_demo": True}, "calibration": {"temperature": 1.234},
                    "min_confidence": 0.55}


def test_every_number_on_the_card_comes_from_its_own_key():
    card = model_card.render(DISTINCT_METRICS, DISTINCT_SERVING)
    for needle in _numbers_of(DISTINCT_METRICS, DISTINCT_SERVING):
        assert needle in card, (needle, card)


@pytest.mark.slow
def test_the_zip_carries_a_card_with_the_run_s_numbers(trained_run):
    manifest = verify_package(trained_run.zip_path)
    assert model_card.FILE_IN_ZIP in manifest["files"]  # covered by the manifest like every member
    card = _zip_member(trained_run.zip_path, model_card.FILE_IN_ZIP)
    metrics = json.loads(_zip_member(trained_run.zip_path, "metrics.json"))
    for needle in _numbers_of(metrics, json.loads(_zip_member(trained_run.zip_path, "serving.json"))):
        assert needle in card, (needle, card)
    assert "**Demo base**" in card and "not Qwen's weights" in card
    assert "not judged yet" in card


@pytest.mark.slow
def test_metrics_record_the_time_range_and_the_data_card_s_ceiling(trained_run, sample_dir):
    data = trained_run.metrics["data"]
    card = json.loads((sample_dir / "data_card.json").read_text(encoding="utf-8"))
    assert data["bayes_ceiling"] == pytest.approx(card["bayes_ceiling"])
    assert f"{card['bayes_ceiling']:.3f}" in _zip_member(trained_run.zip_path, model_card.FILE_IN_ZIP)
    for split in ("train", "val"):
        stamps = pd.to_datetime(pd.read_json(sample_dir / f"{split}.jsonl", lines=True)["timestamp"], utc=True)
        assert data["time_range"][split] == [stamps.min().isoformat(), stamps.max().isoformat()]


def test_the_ceiling_is_unknown_when_the_data_card_describes_other_files(tmp_path, sample_dir):
    from processor.io import sha256_file
    from processor.train_loop import _bayes_ceiling

    digests = {s: sha256_file(sample_dir / f"{s}.jsonl") for s in ("train", "val")}
    assert _bayes_ceiling(sample_dir / "train.jsonl", digests) is not None
    assert _bayes_ceiling(sample_dir / "train.jsonl", {**digests, "val": "0" * 64}) is None
    assert _bayes_ceiling(tmp_path / "train.jsonl", digests) is None  # no card at all


def test_sections_without_numbers_say_so():
    card = model_card.render({"val_macro_f1": 0.5}, {"base": {"name": "some/hub-model", "is_demo": False}})
    assert "calibration: not measured" in card and "baselines: not computed" in card
    assert "Bayes ceiling: unknown" in card and "Demo base" not in card


@pytest.mark.slow
def test_the_registered_version_links_a_card_with_the_gate_verdict(tracking, trained_run, tmp_path):
    client = MlflowClient(tracking)
    name = f"card-{uuid.uuid4().hex[:8]}"
    lenient = tmp_path / "checks.yaml"  # the card is what is tested here, not the tiny model's quality
    lenient.write_text("val_macro_f1: {min: 0.0}\nclass_f1: {long: 0.0, short: 0.0}\n", encoding="utf-8")
    assert gate.main(["--run-id", trained_run.run_id, "--model-name", name, "--checks", str(lenient)]) == 0
    version = client.get_model_version_by_alias(name, "champion")
    link = f"runs:/{trained_run.run_id}/{model_card.RUN_ARTIFACT}"
    assert link in version.description
    # And a Markdown link the UI opens: the card's page in the artifact view of the run's experiment.
    experiment_id = client.get_run(trained_run.run_id).info.experiment_id
    ui = f"(#/experiments/{experiment_id}/runs/{trained_run.run_id}/artifacts/{model_card.RUN_ARTIFACT})"
    assert f"[{model_card.RUN_ARTIFACT}]{ui}" in version.description
    card = Path(mlflow.artifacts.download_artifacts(link, dst_path=str(tmp_path / "card"))).read_text(encoding="utf-8")
    assert "**PASSED**" in card and f"version {version.version}" in card
    for needle in _numbers_of(trained_run.metrics, json.loads(_zip_member(trained_run.zip_path, "serving.json"))):
        assert needle in card, (needle, card)
    # The registered model itself carries the zip, and with it the packaged card.
    registered = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp_path / "m")))
    zips = list(registered.rglob("model_final.zip"))
    assert len(zips) == 1 and model_card.FILE_IN_ZIP in verify_package(zips[0])["files"]


@pytest.mark.parametrize("metrics", [{}, {"data": "x", "baselines": [1], "bootstrap": 5, "per_class": None,
                                          "class_balance": {"after": 3}, "calibration": [], "val_macro_f1": "high"}])
def test_a_broken_metrics_file_still_renders(metrics):
    # The gate writes a card for failing runs too, whose metrics.json may be doctored or broken.
    card = model_card.render(metrics, {"base": None}, gate={"status": "failed", "checks": [None, {"name": "schema"}],
                                                            "registration": "x"})
    assert "**FAILED**" in card and "val macro-F1 n/a" in card
