"""Benchmark: sweep wall time with one vs two workers on one PostgreSQL study, and what pruning saves.

Three sweeps of N qwen-tiny trials (same data, search space and sampler seed), each run as real
``python -m processor.tune`` processes against a real MLflow server:

  1. one worker, no pruning
  2. two workers, no pruning
  3. one worker, median pruning        (same as 1 plus MedianPruner)

Every worker uses ``--threads-per-worker`` torch threads (default 1): on a shared box, two threads per
process can be several times slower than one, which would swamp the effect being measured.

Reports wall time, trials/minute, the 1-vs-2-worker speed-up, and for pruning the wall time and the
number of epochs trained against sweep 1. A throwaway PostgreSQL cluster is started on 127.0.0.1
(as tests/conftest.py does) unless ``--storage-base postgresql://user@host:port`` names a server
whose user may create databases. The machine may be shared: the load average is recorded.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_tune.py [--trials 8] [--epochs 3] [--events 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "tune.json"
sys.path.insert(0, str(REPO / "tests"))  # the same server helpers the test fixtures use

SPACE = {"params": {"gamma": {"type": "float", "low": 0.5, "high": 2.5},
                    "lora_r": {"type": "categorical", "choices": [8, 16]},
                    # Down to 1e-5 so some trials are hopeless for qwen-tiny: pruning has work to do.
                    "lr": {"type": "float", "low": 1.0e-5, "high": 5.0e-3, "log": True}},
         "sampler": {"type": "tpe", "n_startup_trials": 4},
         # Sweeps 1 and 2 pass --pruner none; sweep 3 uses this.
         "pruner": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 0}}


@contextmanager
def postgres_cluster() -> Iterator[str]:
    from conftest import _pg_bin, free_port

    bindir = _pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found; install `postgresql` or pass --storage-base")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w",
                    "-o", f"-p {port} -h 127.0.0.1 -k {sock}", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(f"{server}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{server}/{name}"


def run_sweep(name: str, *, workers: int, pruner: str, storage: str, work: Path, args: argparse.Namespace,
              sweep: Path, data: Path, env: dict[str, str]) -> dict[str, Any]:
    import optuna

    from processor.tune import normalize_url

    threads = args.threads_per_worker
    cmd = [sys.executable, "-m", "processor.tune", "--config", str(REPO / "configs" / "tiny.yaml"),
           "--sweep", str(sweep), "--n-trials", str(args.trials), "--study-name", name, "--storage", storage,
           *(["--pruner", "none"] if pruner == "none" else []), "--output-dir", str(work / name), "--torch-threads", str(threads),
           f"data.train_file={data / 'train.jsonl'}", f"data.val_file={data / 'val.jsonl'}",
           f"training.epochs={args.epochs}", "training.batch_size=8", "training.patience=100",
           "eval.baselines=false", "eval.bootstrap_resamples=100", "mlflow.log_model=false",
           f"mlflow.experiment=bench-tune-{name}"]
    logs = [work / f"{name}-worker{i}.log" for i in range(workers)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env) for log in logs]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for proc in procs:  # Ctrl-C: stop the workers before the servers go away
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"{name}: worker exit codes {codes}; see {logs}")
    trials = optuna.load_study(study_name=name, storage=normalize_url(storage)).trials
    states = {s: sum(1 for t in trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    epochs = sum(len(t.intermediate_values) for t in trials)
    best = max((t.value for t in trials if t.value is not None), default=None)
    row = {"workers": workers, "torch_threads_per_worker": threads, "pruner": pruner, "wall_s": round(wall, 1),
           "trials": len(trials), **{f"n_{k.lower()}": v for k, v in states.items()},
           "epochs_trained": epochs, "trials_per_min": round(len(trials) / wall * 60, 2),
           "best_val_macro_f1": round(best, 4) if best is not None else None,
           "loadavg_1min_start": load}
    print(f"{name:>14}: {wall:7.1f} s  {row['trials_per_min']:5.2f} trials/min  epochs {epochs:3d}  "
          f"pruned {states['PRUNED']}  best {row['best_val_macro_f1']}", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--events", type=int, default=300, help="sample events (80 %% train)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--storage-base", help="postgresql://user@host:port of an existing server")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    from conftest import start_mlflow_server, stop

    from processor.model import resolve_model
    from demo_kit.sample_data import write_sample_data

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(x for x in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if x))
    env.setdefault("PROCESSOR_CACHE_DIR", str(REPO / ".cache"))
    os.environ["PROCESSOR_CACHE_DIR"] = env["PROCESSOR_CACHE_DIR"]
    resolve_model("qwen-tiny")  # build/cache the base once, outside the timings
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        work = Path(tmp)
        data = work / "data"
        write_sample_data(data, n=args.events, seed=0)
        import yaml

        sweep = work / "sweep.yaml"
        sweep.write_text(yaml.safe_dump(SPACE), encoding="utf-8")
        uri, server = start_mlflow_server(work / "mlflow")
        env["MLFLOW_TRACKING_URI"] = uri
        try:
            with nullcontext(args.storage_base) if args.storage_base else postgres_cluster() as pg:
                runs = {}
                for name, workers, pruner in (("one-worker", 1, "none"), ("two-workers", 2, "none"),
                                              ("one-pruned", 1, "median")):
                    storage = create_database(pg, f"bench_{name.replace('-', '_')}")
                    runs[name] = run_sweep(name, workers=workers, pruner=pruner, storage=storage, work=work,
                                           args=args, sweep=sweep, data=data, env=env)
        finally:
            stop(server)

    one, two, pruned = runs["one-worker"], runs["two-workers"], runs["one-pruned"]
    result = {
        "benchmark": "tune", "command": "PYTHONPATH=src .venv/bin/python benchmarks/bench_tune.py "
                                        f"--trials {args.trials} --epochs {args.epochs} --events {args.events} "
                                        f"--threads-per-worker {args.threads_per_worker}",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "setup": {"trials": args.trials, "epochs": args.epochs, "events": args.events, "model": "qwen-tiny",
                  "storage": "postgresql", "search_space": SPACE},
        "runs": runs,
        "two_vs_one_worker_speedup": round(one["wall_s"] / two["wall_s"], 2),
        "pruning": {"wall_saved_pct": round(100 * (1 - pruned["wall_s"] / one["wall_s"]), 1),
                    "epochs_saved_pct": round(100 * (1 - pruned["epochs_trained"] / one["epochs_trained"]), 1),
                    "n_pruned": pruned["n_pruned"]},
    }
    print(f"\ntwo workers vs one: speed-up {result['two_vs_one_worker_speedup']}x; pruning saved "
          f"{result['pruning']['wall_saved_pct']} % wall time, {result['pruning']['epochs_saved_pct']} % epochs "
          f"({pruned['n_pruned']} of {pruned['trials']} trials pruned)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
