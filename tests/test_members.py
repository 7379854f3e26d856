"""training.members: K adapters on one base, their softmax averaged. What ships from a package of several
members (fast: random adapters, numbers computed by hand in tests/shipped.py), and a real run of two."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

import shipped
from conftest import tiny_config
from processor.model import ensemble_members
from processor.package import load_packaged_model
from processor.schema import LABELS


@pytest.fixture(scope="module")
def two_members(sample_dir, tmp_path_factory) -> shipped.TinyPackage:
    return shipped.build(tmp_path_factory.mktemp("two-members"), sample_dir, members=2)


def test_a_package_of_two_members_ships_the_head_of_their_averaged_softmax(two_members):
    model = load_packaged_model(two_members.zip_path)
    try:
        # Several adapters do not fold into one set of weights: the loaded model keeps both, unmerged.
        assert ensemble_members(model.model) == ["default", "member-01"]
        np.testing.assert_allclose(model.predict_proba(two_members.events), two_members.expected, atol=1e-5)
        # The second member counts: the first alone ships other numbers.
        model.model.delete_adapter("member-01")
        alone = model.predict_proba(two_members.events)
        assert np.abs(alone - two_members.expected).max() > 1e-2
    finally:
        model.close()


def test_the_pyfunc_serves_the_members_average(two_members):
    from types import SimpleNamespace

    from processor.serving import ZIP_ARTIFACT, EventClassifierPyfunc

    pyfunc = EventClassifierPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts={ZIP_ARTIFACT: str(two_members.zip_path)}))
    try:
        rows = pyfunc.predict(None, pd.DataFrame(two_members.events))
        np.testing.assert_allclose(rows[[f"p_{n}" for n in LABELS]].to_numpy(), two_members.expected, atol=1e-5)
    finally:
        pyfunc._model.close()


def test_members_do_not_resume_or_run_under_torchrun(sample_dir, tmp_path, capsys):
    from processor.train_loop import main

    code = main(["--config", "configs/tiny.yaml", "--train-file", str(sample_dir / "train.jsonl"),
                 "--val-file", str(sample_dir / "val.jsonl"), "--output-dir", str(tmp_path / "out"), "--no-mlflow",
                 "--resume", "true", "training.members=2"])
    err = capsys.readouterr().err
    assert code == 2 and "training.members=2" in err and "does not resume" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_run_of_two_members_ships_and_scores_their_average(sample_dir, tmp_path):
    from processor.train_loop import train

    cfg = tiny_config(sample_dir, tmp_path / "out", **{
        "mlflow.enabled": False, "training.members": 2, "training.epochs": 2, "eval.baselines": False})
    result = train(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["members"] == 2
    with zipfile.ZipFile(result.zip_path) as zf:  # the model card says what ships
        assert "LoRA r=16, alpha=32 x 2 members, their softmax averaged" in zf.read("MODEL_CARD.md").decode()
    assert not (tmp_path / "out" / "members").exists()  # each member's own run is folded into the zip
    events = pd.read_json(sample_dir / "val.jsonl", lines=True).to_dict(orient="records")
    labels = [LABELS.index(e["label"]) for e in events]
    packaged = load_packaged_model(result.zip_path)
    try:
        assert ensemble_members(packaged.model) == ["default", "member-01"]
        probs = packaged.predict_proba(events)
        # metrics.json scored the same average the package ships, on val.
        from sklearn.metrics import f1_score

        assert f1_score(labels, probs.argmax(axis=1), average="macro") == pytest.approx(metrics["val_macro_f1"], abs=1e-9)
        packaged.model.delete_adapter("member-01")
        first = packaged.predict_proba(events)
    finally:
        packaged.close()
    assert np.abs(first - probs).max() > 1e-3  # the second member was trained (seed + 1000), not a copy
