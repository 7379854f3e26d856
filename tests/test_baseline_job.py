"""processor.baseline_job: the classic baselines fitted by a process of their own while the LLM trains.
The trained-run tests (test_train_loop.py) check the baselines a real run records through it."""

from __future__ import annotations

import pytest

from processor import baseline_job
from processor.baseline_job import start_baselines
from processor.config import Config
from processor.evaluate import fit_baselines
from test_evaluate import SMALL, _events

pytestmark = pytest.mark.slow  # each job starts a Python process that imports sklearn, LightGBM and Optuna


def _cfg(seed: int = 0) -> Config:
    cfg = Config(seed=seed)
    cfg.eval.tuned_trials, cfg.eval.tuned_folds, cfg.eval.tuned_max_trees = SMALL.trials, SMALL.folds, SMALL.max_trees
    return cfg


def _plain(result):
    """The scores as plain dicts, without the tuned tree's seconds (the one field that is a timing)."""
    return {name: {k: v for k, v in score.to_dict().items() if k != "seconds"} for name, score in result.items()}


@pytest.fixture(autouse=True)
def _forget():
    baseline_job._FITTED.clear()
    yield
    baseline_job._FITTED.clear()


def _no_process(*args, **kwargs):
    raise AssertionError("a process was started")


def test_the_job_returns_what_fit_baselines_returns_here():
    train, val = _events(400, seed=0), _events(200, seed=1)
    with start_baselines(_cfg(), train, val) as job:
        assert job.process is not None and job.folder.is_dir()
        got = job.result()
    assert job.process.returncode == 0 and not job.folder.exists()
    assert set(got) == {"logistic_regression", "hist_gradient_boosting", "tuned_gbdt"}
    assert _plain(got) == _plain(fit_baselines(train, val, seed=0, search=SMALL))


def test_the_same_split_and_seed_are_fitted_once_per_process(monkeypatch):
    train, val = _events(300, seed=2), _events(100, seed=3)
    with start_baselines(_cfg(), train, val) as job:
        first = job.result()
    monkeypatch.setattr(baseline_job.subprocess, "Popen", _no_process)
    with start_baselines(_cfg(), train, val) as again:  # a sweep's next trial
        assert again.process is None and again.result() is first
    for other in ((_cfg(seed=1), train, val), (_cfg(), train, val.iloc[1:])):  # another seed, another split
        with pytest.raises(AssertionError, match="a process was started"):
            start_baselines(*other)


def test_no_baselines_start_no_process(monkeypatch):
    monkeypatch.setattr(baseline_job.subprocess, "Popen", _no_process)
    cfg = _cfg()
    cfg.eval.baselines = False
    with start_baselines(cfg, _events(50, seed=0), _events(20, seed=1)) as job:
        assert job.result() is None


def test_the_jobs_error_is_raised_where_the_result_is_collected():
    train = _events(100, seed=4)
    train["label"] = "no_trade"
    with start_baselines(_cfg(), train, _events(50, seed=5)) as job:
        with pytest.raises(ValueError, match="baselines need at least two classes in the training labels"):
            job.result()
    assert not job.folder.exists()


def test_leaving_the_block_stops_a_job_nobody_collected():
    """A run that fails or is interrupted while training leaves no process and no files behind."""
    with start_baselines(_cfg(), _events(400, seed=6), _events(200, seed=7)) as job:
        assert job.process.poll() is None  # still importing its libraries
    assert job.process.returncode is not None and job.process.returncode != 0
    assert not job.folder.exists()
