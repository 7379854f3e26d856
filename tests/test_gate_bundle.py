"""``gates/gate.py --bundle-base``: a run trained on a non-demo base (a Qwen2 checkpoint this test saves
with ``save_pretrained``, standing in for a hub model) is registered with its base inside, so the
champion loads and predicts after the original checkpoint is gone."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.models import Model

from conftest import tiny_config
from processor import gate
from processor.data import load_events
from processor.package import load_packaged_model
from processor.schema import FEATURES, LABELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub_like_base(tmp_path_factory) -> Path:
    """The demo base's weights saved as an ordinary Qwen2 checkpoint directory (not the demo alias)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from processor.model import resolve_model

    source = resolve_model("qwen-tiny").path
    target = tmp_path_factory.mktemp("hub") / "qwen2-local"
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    assert json.loads((target / "config.json").read_text())["model_type"] == "qwen2"
    return target


def _train(base: Path, sample_dir: Path, out: Path):
    from processor.train_loop import train

    cfg = tiny_config(sample_dir, out, **{
        "model": str(base), "training.epochs": 2, "training.patience": 1, "eval.baselines": False,
        "eval.bootstrap_resamples": 200, "mlflow.experiment": "tests-bundle-base"})
    return train(cfg)


def _probs(rows: list[dict]) -> np.ndarray:
    return np.array([[row[f"p_{name}"] for name in LABELS] for row in rows], dtype=float)


def test_bundle_base_registers_a_model_that_serves_without_the_base(tracking, hub_like_base, lenient_checks,
                                                                     sample_dir, tmp_path, capsys):
    client = MlflowClient(tracking)
    run = _train(hub_like_base, sample_dir, tmp_path / "out")
    metadata = Model.load(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model")).metadata
    assert metadata["base_bundled"] is False  # a non-demo base is referenced, not bundled, by default

    events = load_events(sample_dir / "val.jsonl", labeled=False)[["id", *FEATURES]].head(40)
    packaged = load_packaged_model(run.zip_path)
    expected = _probs(packaged.predict(events.to_dict(orient="records")))
    packaged.close()

    # The base is not available where the gate runs: a clear exit 2, nothing registered.
    name = f"bundle-{uuid.uuid4().hex[:8]}"
    moved = hub_like_base.with_name("qwen2-moved")
    hub_like_base.rename(moved)
    try:
        capsys.readouterr()
        assert gate.main(["--run-id", run.run_id, "--model-name", name, "--checks", str(lenient_checks),
                          "--bundle-base"]) == 2
        err = capsys.readouterr().err
        assert "--bundle-base" in err and "not available" in err and "Traceback" not in err
        assert client.search_model_versions(f"name = '{name}'") == []
    finally:
        moved.rename(hub_like_base)

    report = tmp_path / "report.json"
    assert gate.main(["--run-id", run.run_id, "--model-name", name, "--checks", str(lenient_checks),
                      "--bundle-base", "--report", str(report)]) == 0
    assert json.loads(report.read_text(encoding="utf-8"))["registration"]["base_bundled"] is True
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == run.run_id
    registered = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp_path / "dl")))
    model = Model.load(registered)
    assert model.metadata["base_bundled"] is True
    base_path = model.flavors["python_function"]["artifacts"]["base"]["path"]
    assert (registered / base_path / "config.json").is_file()

    # The original checkpoint is gone: the champion predicts from the base it carries, like the zip did.
    shutil.rmtree(hub_like_base)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(events)
    np.testing.assert_allclose(_probs(served.to_dict(orient="records")), expected, atol=1e-5)
    assert list(served["id"]) == list(events["id"])


def test_bundle_base_is_a_no_op_for_the_demo_base(tracking, trained_run, lenient_checks):
    client = MlflowClient(tracking)
    run = client.get_run(trained_run.run_id)
    before = gate.find_logged_model(client, run).model_id
    name = f"bundle-demo-{uuid.uuid4().hex[:8]}"
    assert gate.main(["--run-id", trained_run.run_id, "--model-name", name, "--checks", str(lenient_checks),
                      "--bundle-base"]) == 0
    # No second model logged: the demo base travels with every model already.
    assert gate.find_logged_model(client, run).model_id == before
    assert client.get_model_version_by_alias(name, "champion").source in (f"models:/{before}",)
