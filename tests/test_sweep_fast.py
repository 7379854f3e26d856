"""How many trials the sweep runs, in the fast tier: the sweep's own worker loop
(processor.tune.objective.run_worker: the lock, the count of the study's trials in a real sqlite
Optuna storage, the sampler per trial) with a trivial trial in place of a training run.
test_tune.py runs real trials end to end (slow tier)."""

from __future__ import annotations

import optuna
import pytest

from conftest import REPO
from processor.config import load_config
from processor.tune.objective import Context, TrialFailed, run_worker
from processor.tune.space import load_sweep, make_pruner, make_sampler
from processor.tune.storage import counted, make_lock, open_storage, storage_url


def _trial(ctx: Context, trial: optuna.Trial) -> float:
    """What objective does around a training run: release the lock once the trial exists, draw the
    parameters; then a score, or a crash for every third trial (a crashed trial counts too)."""
    ctx.lock.release()
    params = ctx.sweep.suggest(trial)
    if trial.number % 3 == 2:
        raise TrialFailed("made-up crash")
    return float(params["gamma"])


@pytest.fixture
def ctx(tmp_path):
    base = load_config(REPO / "configs" / "tiny.yaml")
    sweep = load_sweep(REPO / "configs" / "sweep.yaml", base)
    url = storage_url("", tmp_path)
    study = optuna.create_study(study_name="fast", storage=open_storage(url, heartbeat=60, grace=None, max_retry=3),
                                direction="maximize", sampler=make_sampler(sweep.sampler, 0),
                                pruner=make_pruner(sweep.pruner, base.training.epochs))
    context = Context(study=study, sweep=sweep, base=base, output_dir=tmp_path, lock=make_lock(url, "fast"),
                      gate=None, mlflow_on=False, quiet=True, keep_checkpoints=False)
    yield context
    context.lock.close()


def test_the_sweep_runs_exactly_n_trials_and_a_rerun_continues_to_n(ctx):
    run_worker(ctx, 4, None, seed=0, trial_fn=_trial)
    trials = ctx.study.get_trials(deepcopy=False)
    assert len(trials) == len(counted(trials)) == 4
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    run_worker(ctx, 4, None, seed=0, trial_fn=_trial)  # the study already holds n: nothing more
    assert len(ctx.study.get_trials(deepcopy=False)) == 4
    run_worker(ctx, 6, None, seed=0, trial_fn=_trial)  # a larger n continues the same study to it
    assert len(ctx.study.get_trials(deepcopy=False)) == 6
