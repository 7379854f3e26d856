"""The served model and the predict CLI on the tiny package (conftest ``tiny_package``), in the fast
tier: a bundled base whose weights are not the ones trained on is refused at load, the served model
checks each request against the event contract, and predict's --min-confidence reaches a zip."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from safetensors.torch import load_file, save_file

from conftest import read_jsonl
from processor.cli import run
from processor.package import PackageError
from processor.predict import main as predict_main
from processor.serving import BASE_ARTIFACT, ZIP_ARTIFACT, EventClassifierPyfunc
from test_shipped import assert_ships, write_events


def _served(zip_path, base_dir) -> EventClassifierPyfunc:
    """The logged pyfunc as MLflow loads it, with the base checkpoint bundled as its artifact."""
    model = EventClassifierPyfunc()
    model.load_context(SimpleNamespace(artifacts={ZIP_ARTIFACT: str(zip_path), BASE_ARTIFACT: str(base_dir)}))
    return model


@pytest.fixture(scope="module")
def bundled(tiny_package, tmp_path_factory):
    """Served from a copy of the base it was trained on, bundled beside the zip (the original could be
    gone: an air-gapped host)."""
    copy = shutil.copytree(tiny_package.base_dir, tmp_path_factory.mktemp("bundled") / "base")
    model = _served(tiny_package.zip_path, copy)
    yield model
    model._model.close()


def test_a_bundled_base_with_other_weights_is_refused_at_load(tiny_package, bundled, tmp_path, capsys):
    # The right weights, bundled: served as the package ships.
    assert_ships(bundled.predict(None, pd.DataFrame(tiny_package.events)).to_dict(orient="records"), tiny_package)
    # One weight nudged: same names, shapes and config, not the base the adapter was trained on.
    wrong = shutil.copytree(tiny_package.base_dir, tmp_path / "wrong-base")
    tensors = load_file(wrong / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + torch.full_like(tensors[name], 1e-3)
    save_file(tensors, wrong / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PackageError, match="is not the one this adapter was trained on") as err:
        _served(tiny_package.zip_path, wrong)
    assert str(wrong) in str(err.value)
    # Wherever a command meets it: one error line and exit 2, no traceback.
    assert run(lambda: _served(tiny_package.zip_path, wrong)) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "weights sha256 differs" in stderr and "Traceback" not in stderr


def test_the_served_model_checks_each_request_against_the_contract(tiny_package, bundled):
    """Values the model could render but the contract refuses (ext_dir 7, a flag of "true"): HTTP 400
    material naming row, id and key, not predictions."""
    events = [dict(e) for e in tiny_package.events[:3]]
    events[1]["ext_dir"] = 7
    events[2]["fvg_up"] = "true"
    with pytest.raises(MlflowException) as err:
        bundled.predict(None, pd.DataFrame(events))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    message = str(err.value.message)
    assert "breaks the event contract (2 problems)" in message
    assert f"row 2 id={events[1]['id']} key=ext_dir" in message and f"id={events[2]['id']} key=fvg_up" in message
    # The same request as a list of events (what a served request's "inputs" is).
    with pytest.raises(MlflowException, match="key=ext_dir"):
        bundled.predict(None, events)


def test_predict_min_confidence_reaches_a_zip(tiny_package, tmp_path):
    """--min-confidence between two events' tops two thirds of the way up: more events abstain than at
    the package's own threshold (a third of the way), exactly those under the flag's value."""
    tops = np.sort(tiny_package.expected.max(axis=1))
    k = 2 * len(tops) // 3
    threshold = float((tops[k] + tops[k + 1]) / 2)
    assert tops[k + 1] - tops[k] > 1e-6 and threshold > tiny_package.min_confidence
    events = write_events(tmp_path / "events.jsonl", tiny_package.events)
    assert predict_main(["--model", str(tiny_package.zip_path), "--input", str(events),
                         "--output", str(tmp_path / "out.jsonl"), "--min-confidence", repr(threshold)]) == 0
    abstained = (tiny_package.expected.max(axis=1) < threshold).tolist()
    assert sum(abstained) == k + 1 > sum(tiny_package.abstained)
    assert_ships(read_jsonl(tmp_path / "out.jsonl"), tiny_package, abstained=abstained)
