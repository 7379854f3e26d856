"""The classic baselines (processor.evaluate.fit_baselines) as a job beside training.

They need the data alone, and training runs on one torch thread, so the train loop starts them in a
process of their own before it trains and collects them in its evaluate phase: the tuned tree's search,
most of that phase, runs on the idle core meanwhile (docs/benchmarks.md gives the seconds).

The job is a fresh interpreter that runs :func:`job` (pickles in and out; an internal step, not a
command), not multiprocessing: a spawned worker re-imports the caller's ``__main__``, so a script that
calls ``train()`` without a main guard would start training again in it, and a forked one inherits
torch's threads.

Baselines are a pure function of (train, val, seed, names, search), so results are memoised per process:
a sweep's trials, which share one split and seed, fit them once.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from processor.config import Config

_RUN_JOB = ("import sys; from pathlib import Path; from processor.baseline_job import job; "
            "job(*map(Path, sys.argv[1:]))")
_FITTED: dict[str, Any] = {}  # key -> fit_baselines' result
_FITTED_SIZE = 8


class PendingBaselines:
    """The baselines of one run: being fitted by a job (``process``), or known already (no process).
    :meth:`result` waits for them; leaving the ``with`` block stops a job nobody collected (a failed or
    interrupted run) and removes its files."""

    def __init__(self, *, done: Any = None, key: str = "", process: subprocess.Popen | None = None,
                 folder: Path | None = None):
        self.process, self.folder = process, folder
        self._done, self._key, self._collected = done, key, process is None

    def result(self) -> Any:
        """fit_baselines' result (None when eval.baselines is empty); its error, raised again here."""
        if self._collected:
            return self._done
        try:
            code = self.process.wait()
            out = self.folder / "out.pkl"
            if not out.is_file():
                raise RuntimeError(f"the baselines' process exited with code {code} and no result "
                                   "(its error is printed above)")
            ok, value = pickle.loads(out.read_bytes())
        finally:
            self.close()
        if not ok:
            raise value
        _remember(self._key, value)
        self._done, self._collected = value, True
        return value

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PendingBaselines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_baselines(cfg: Config, train: pd.DataFrame, val: pd.DataFrame) -> PendingBaselines:
    """Start fitting ``cfg.eval``'s baselines on (``train``, ``val``) in a process of their own."""
    names = cfg.eval.baseline_names()
    if not names:
        return PendingBaselines()
    kwargs = {"seed": cfg.seed, "names": names, "search": cfg.eval.tree_search()}
    key = _key(train, val, kwargs)
    if key in _FITTED:
        return PendingBaselines(done=_FITTED[key])
    folder = Path(tempfile.mkdtemp(prefix="processor-baselines-"))
    (folder / "in.pkl").write_bytes(pickle.dumps(((train, val), kwargs)))
    process = subprocess.Popen([sys.executable, "-c", _RUN_JOB, str(folder / "in.pkl"), str(folder / "out.pkl")],
                               env=_child_env(), stdin=subprocess.DEVNULL)
    return PendingBaselines(key=key, process=process, folder=folder)


def _child_env() -> dict[str, str] | None:
    """The child imports this package from where this process found it: a source checkout is put first on
    its PYTHONPATH; an installed package is found as usual (None: the same environment)."""
    src = Path(__file__).resolve().parents[1]
    if src in {Path(sysconfig.get_path(k)).resolve() for k in ("purelib", "platlib")}:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)}


def _key(train: pd.DataFrame, val: pd.DataFrame, kwargs: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for frame in (train, val):
        h.update(repr(list(frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    h.update(repr(sorted(kwargs.items())).encode())
    return h.hexdigest()


def _remember(key: str, value: Any) -> None:
    if len(_FITTED) >= _FITTED_SIZE:
        _FITTED.pop(next(iter(_FITTED)))
    _FITTED[key] = value


def job(in_path: Path, out_path: Path) -> None:
    """The job's process: fit_baselines on the pickled arguments at ``in_path``; the result, or the error,
    pickled to ``out_path``."""
    from processor.evaluate import fit_baselines

    args, kwargs = pickle.loads(in_path.read_bytes())
    try:
        result: tuple[bool, Any] = (True, fit_baselines(*args, **kwargs))
    except Exception as exc:  # the parent raises it again where it collects the result
        result = (False, exc)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(out_path)  # the parent sees a whole result or none
