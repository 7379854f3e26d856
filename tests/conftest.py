"""Shared fixtures: real services on 127.0.0.1 (MLflow tracking server, PostgreSQL), the shared
qwen-tiny build, sample data, and one real trained run reused by the tracking/gate/predict tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# The repository's own contract (`python -m processor.schema --export contract`): every test reads this.
CONTRACT_DIR = REPO / "contract"
# The upstream copy, beside the repo in the monorepo checkout (and in CI). Only the tests that compare
# contract/ with it read it; a clone anywhere else skips just those.
UPSTREAM_CONTRACT_DIR = REPO.parent / "shared" / "contract"
UPSTREAM_SKIP_REASON = f"upstream contract {UPSTREAM_CONTRACT_DIR} not present: nothing to compare contract/ with"
needs_upstream = pytest.mark.skipif(not UPSTREAM_CONTRACT_DIR.is_dir(), reason=UPSTREAM_SKIP_REASON)

# One qwen-tiny build for the whole suite (and across runs on this machine); no hub access ever.
os.environ.setdefault("PROCESSOR_CACHE_DIR", str(REPO / ".cache"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# `mlflow run` (MLproject commands say `python`) and `mlflow models serve` (uvicorn) must find this
# interpreter's environment even when the venv is not activated.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


# `make test` runs the suite on two pytest-xdist workers (`-n 2` in pyproject's addopts: training uses one
# torch thread, so two runs fill two cores). Each worker builds its own fixtures, so the scheduler below
# hands out units that share them: the tests of one trained run (trained once, not once per worker), a
# fast test module (its module fixtures built once), a slow test alone (so both cores stay busy). xdist's
# own `--dist loadgroup` cannot do the first on pytest 9.2 (its group rides on a node id pytest no longer
# lets it change: pytest-xdist issue 1386), so each worker writes the unit of every test it collected to a
# file, and the scheduler reads them.
_ONE_WORKER = {"trained_run": "trained-run", "packaged": "trained-run", "early_stopped_run": "early-stopped-run"}


def pytest_configure_node(node):  # xdist, on the controller: where the worker writes its units
    node.workerinput["units_file"] = str(_units_dir(node.config) / f"{node.gateway.id}.json")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureUnits(LoadScopeScheduling):
        """xdist's scope scheduling, with the units the workers wrote (pytest_collection_modifyitems)."""

        def _split_scope(self, nodeid: str) -> str:
            if not hasattr(self, "units"):  # first called once every worker has collected
                self.units = {k: v for f in _units_dir(config).glob("*.json")
                              for k, v in json.loads(f.read_text(encoding="utf-8")).items()}
            return self.units.get(nodeid, nodeid)

    return SharedFixtureUnits(config, log)


_UNITS_DIR = pytest.StashKey[Path]()


def _units_dir(config) -> Path:
    if _UNITS_DIR not in config.stash:
        config.stash[_UNITS_DIR] = Path(tempfile.mkdtemp(prefix="xdist-units-"))
        config.add_cleanup(lambda: shutil.rmtree(config.stash[_UNITS_DIR], ignore_errors=True))
    return config.stash[_UNITS_DIR]


def pytest_collection_modifyitems(config, items):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    shared = {item.nodeid: _shared_fixtures(item) for item in items}
    # The longest units first (a trained fixture's tests, then tests marked `long`): started last, one of
    # them would leave the other worker idle at the end (a cold clone builds a demo base there, ~1 min).
    items.sort(key=lambda item: (bool(shared[item.nodeid]), item.get_closest_marker("long") is not None), reverse=True)
    units = {item.nodeid: shared[item.nodeid] or _own_unit(item) for item in items}
    Path(workerinput["units_file"]).write_text(json.dumps(units), encoding="utf-8")


def _shared_fixtures(item) -> str:
    """The _ONE_WORKER unit of a test that uses such a fixture ("" if it uses none)."""
    # A test that takes the fixture by name (request.getfixturevalue) has the name among its parameters.
    params = getattr(item, "callspec", None)
    used = {*item.fixturenames, *(v for v in (params.params.values() if params else ()) if isinstance(v, str))}
    return "+".join(sorted({_ONE_WORKER[name] for name in used if name in _ONE_WORKER}))


def _own_unit(item) -> str:
    """A slow test alone; a fast test with the rest of its module."""
    return item.nodeid if item.get_closest_marker("slow") else item.nodeid.split("::")[0]


def run_module(module: str, *args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` in a child process of this interpreter (the editable install makes
    ``processor`` importable there: no PYTHONPATH needed), output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# One interpreter runs several commands in turn, each as ``python -m module args`` (or ``python script.py
# args``) runs it: ``runpy`` as ``__main__``, SystemExit's code is the exit code, an escaped exception exits
# 1 with its traceback on stderr. torch, pandas and MLflow are imported once, not once per command.
_MODULES_RUNNER = """
import contextlib, io, json, os, runpy, sys, traceback
results = []
for argv, cwd in json.loads(sys.argv[1]):
    if cwd:
        os.chdir(cwd)
    script = argv[0].endswith(".py")
    sys.argv = list(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if script:
                runpy.run_path(argv[0], run_name="__main__")
            else:
                runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc(file=err)
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_modules(*commands: list[str], cwds: list[Path] | None = None,
                timeout: float = 600) -> list[subprocess.CompletedProcess[str]]:
    """Each ``[module, *args]`` (or ``[script.py, *args]``) of ``commands`` run as ``python -m module args``
    would, all in one child process of this interpreter (see _MODULES_RUNNER), the i-th from ``cwds[i]``
    if given; this checkout's src/ comes first on the path. One CompletedProcess per command."""
    dirs = [str(d) for d in cwds] if cwds is not None else [None] * len(commands)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _MODULES_RUNNER, json.dumps(list(zip(commands, dirs)))],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [subprocess.CompletedProcess(command, r["returncode"], r["stdout"], r["stderr"])
            for command, r in zip(commands, json.loads(proc.stdout.strip().splitlines()[-1]))]


def read_jsonl(path: Path) -> list[Any]:
    from processor.io import read_jsonl as read

    return read(path)


def assert_png_has_content(path: Path) -> None:
    """A PNG that decodes to a real figure, not just a file starting with the PNG signature."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert image.std() > 0.05, f"{path}: a blank canvas"


@pytest.fixture
def make_sample_data(tmp_path_factory) -> Any:
    """Factory: ``make_sample_data(n=..., seed=..., rules=..., mix=...)`` writes sample data into a new
    directory and returns it (train.jsonl, val.jsonl, data_card.json)."""
    from demo_kit.sample_data import write_sample_data

    def make(**kwargs: Any) -> Path:
        out = tmp_path_factory.mktemp("sample-data")
        write_sample_data(out, **kwargs)
        return out

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start_mlflow_server(workdir: Path, backend_uri: str | None = None) -> tuple[str, subprocess.Popen]:
    """A real `mlflow server` on 127.0.0.1 with a sqlite (default) or given backend store."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend_uri = backend_uri or f"sqlite:///{(workdir / 'mlflow.db').as_posix()}"
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", (workdir / "artifacts").as_uri(),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        # The server's background job runner (huey workers, for GenAI jobs) is not needed here and
        # costs CPU on a 2-core machine.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=120, proc=proc)
    except Exception:
        proc.terminate()
        raise RuntimeError((workdir / "server.log").read_text(errors="replace")[-3000:]) from None
    return uri, proc


@contextmanager
def model_server(uri: str, logdir: Path, **env: str) -> Iterator[str]:
    """``mlflow models serve -m uri`` on 127.0.0.1 (log in ``logdir/serve.log``); yields its
    /invocations URL and stops the server and its workers after the block."""
    import signal

    port = free_port()
    # MLflow starts `uvicorn` from PATH: the virtualenv's bin goes first, as in an activated environment.
    env = {**os.environ, **env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with (logdir / "serve.log").open("wb") as log:
        # Own session: the server runs its workers as children, stopped together below.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", timeout=300, proc=proc)
        except Exception:
            raise AssertionError((logdir / "serve.log").read_text(errors="replace")[-4000:]) from None
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (AttributeError, ProcessLookupError):  # no process groups (Windows) / already gone
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URI of a real MLflow tracking server (sqlite backend) for the session."""
    uri, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop(proc)


@contextmanager
def tracking_at(uri: str) -> Iterator[Any]:
    """MLflow (in-process and subprocesses) pointed at ``uri`` for the block; restored after."""
    import mlflow

    old_env, old_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.MlflowClient(uri)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
        mlflow.set_tracking_uri(old_uri)


@pytest.fixture(scope="session")
def mlflow_sqlite_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store (tracking and registry), migrated once per session: the migrations
    take seconds, a copy of the file (:func:`sqlite_store`) milliseconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path.as_posix()}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return path


def sqlite_store(template: Path, directory: Path) -> str:
    """URI of a fresh MLflow store in ``directory``: a copy of ``mlflow_sqlite_template``, no server."""
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(shutil.copy(template, directory / 'mlflow.db')).as_posix()}"


@pytest.fixture
def tracking(mlflow_server, monkeypatch):
    """Point MLflow (in-process and in subprocesses) at the session's server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    yield mlflow_server
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster on 127.0.0.1, started by the fixture (installed by .ci/run).
# ---------------------------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """DSN prefix ``postgresql://postgres@127.0.0.1:PORT`` of a fresh cluster; use ``pg_database``."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found (.ci/run installs the `postgresql` package)")
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_root = os.geteuid() == 0
    # PostgreSQL refuses to run as root: run it as the `postgres` system user then.
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "-t", "60",
                    "-o", f"-p {port} -h 127.0.0.1 -k {sock} -c max_connections=200", "start"],
                   check=True, capture_output=True)
    yield f"postgresql://postgres@127.0.0.1:{port}"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database(postgres, request):
    """A new empty database for one test; returns its SQLAlchemy URL (psycopg2 driver: a bare
    ``postgresql://`` makes SQLAlchemy 2.1 pick psycopg 3, which is not installed)."""
    import psycopg2

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    conn = psycopg2.connect(f"{postgres}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{postgres}/{name}".replace("postgresql://", "postgresql+psycopg2://", 1)


# ---------------------------------------------------------------------------------------------
# Data and one real trained run
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Default sample data (seed 0): train.jsonl, val.jsonl, data_card.json."""
    from demo_kit.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("sample")
    write_sample_data(out, seed=0)
    return out


def tiny_config(data_dir: Path, output_dir: Path, **overrides):
    """configs/tiny.yaml pointed at ``data_dir``/``output_dir``, with dotted overrides."""
    from processor.config import load_config

    flat = {"data.train_file": str(data_dir / "train.jsonl"), "data.val_file": str(data_dir / "val.jsonl"),
            "packaging.output_dir": str(output_dir)}
    flat.update(overrides)
    return load_config(REPO / "configs" / "tiny.yaml", flat)


def tiny_config_file(path: Path, **overrides: Any) -> Path:
    """configs/tiny.yaml with dotted overrides (``**{"eval.baselines": False}``) written to ``path``: for
    commands that take a config file but no ``key=value`` overrides (``mlflow run -P config=...``)."""
    import yaml

    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(mlflow_server, sample_dir, tmp_path_factory):
    """One real tiny training run logged to the session's MLflow server (RunResult)."""
    from processor.train_loop import train

    with tracking_at(mlflow_server):
        cfg = tiny_config(sample_dir, tmp_path_factory.mktemp("run") / "out",
                          **{"mlflow.experiment": "tests-trained-run"})
        result = train(cfg)
    return result


# early_stopped_run is also the run trained with an abstention threshold (trust.min_confidence).
EARLY_STOPPED_MIN_CONFIDENCE = 0.5
# early_stopped_run's settings over configs/tiny.yaml, also given on the command line by the resume tests
# (test_resume.py), whose killed-and-resumed runs must end as this uninterrupted one: lr 1e-2 is too
# high for the demo base, so val macro-F1 peaks at an early epoch and falls; patience 2 stops the run
# two epochs later (on the seed-0 sample data: best epoch 1, stopped after epoch 3, of at most 8).
# Patience 2, not 1: a run killed one epoch after its best has spent half its patience, so a resume
# that forgot the counter would train an epoch more (with patience 1 nothing would tell).
EARLY_STOPPED_OVERRIDES = {
    "eval.baselines": False, "training.epochs": 8, "training.patience": 2, "training.lr": 1e-2,
    "eval.confidence": 0.8, "eval.bootstrap_resamples": 200, "trust.min_confidence": EARLY_STOPPED_MIN_CONFIDENCE}


def as_cli_overrides(overrides: dict[str, Any]) -> list[str]:
    """``section.key=value`` arguments of the train CLI for a dict of dotted config overrides."""
    return [f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in overrides.items()]


@pytest.fixture(scope="session")
def early_stopped_run(sample_dir, tmp_path_factory):
    """A run whose best epoch is strictly earlier than its last, with a strictly worse last epoch
    (trained_run's best epochs tie on val macro-F1, so restoring the last one would pass unseen there),
    stopped by its patience (EARLY_STOPPED_OVERRIDES). A few epochs: it is also the resume tests'
    uninterrupted reference."""
    from processor.train_loop import train

    cfg = tiny_config(sample_dir, tmp_path_factory.mktemp("early-stopped") / "out",
                      **{"mlflow.enabled": False, **EARLY_STOPPED_OVERRIDES})
    return train(cfg)


@pytest.fixture(scope="session")
def packaged(trained_run):
    """The trained run's model_final.zip, loaded once (processor.package.load_packaged_model)."""
    from processor.package import load_packaged_model

    model = load_packaged_model(trained_run.zip_path)
    yield model
    model.close()


# ---------------------------------------------------------------------------------------------
# The fast tier's shipped package: no training, built in seconds (tests/shipped.py)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_package(sample_dir, tmp_path_factory):
    """A random tiny Qwen2 packed with a chosen temperature, prior bias, min_confidence and drift
    profile, and the shipped numbers computed by hand (shipped.TinyPackage)."""
    import shipped

    return shipped.build(tmp_path_factory.mktemp("tiny-package"), sample_dir)


@pytest.fixture(scope="session")
def tiny_packaged(tiny_package):
    """tiny_package's zip loaded once by processor.package.load_packaged_model."""
    from processor.package import load_packaged_model

    model = load_packaged_model(tiny_package.zip_path)
    yield model
    model.close()


@pytest.fixture(scope="session")
def qwen_standin_dir(tmp_path_factory) -> Path:
    """The tiny Qwen2.5 stand-in (Qwen's real vocabulary, 2 small layers, random bf16 weights; seconds)."""
    from demo_kit.qwen_standin import build_standin

    return build_standin(tmp_path_factory.mktemp("qwen-standin") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def lenient_checks(tmp_path_factory) -> Path:
    """gates/ship_checks.yaml with the quality floors at 0: for short runs judged on mechanics (gate,
    registry, serving), not on their scores."""
    import yaml

    checks = yaml.safe_load((REPO / "gates" / "ship_checks.yaml").read_text(encoding="utf-8"))
    checks["val_macro_f1"]["min"] = 0.0
    checks["class_f1"] = {"long": 0.0, "short": 0.0}
    path = tmp_path_factory.mktemp("checks") / "lenient.yaml"
    path.write_text(yaml.safe_dump(checks), encoding="utf-8")
    return path
