"""Serving benchmark: one event, 20 and 1,000 events per request, in-process and over HTTP.

    python benchmarks/bench_serving.py                        # trains the demo model first (~1 min)
    python benchmarks/bench_serving.py --model outputs/demo/model_final.zip
    python benchmarks/bench_serving.py --model ZIP --qwen     # adds the Qwen2.5-0.5B stand-in row (~1 GB)

The model is a run's ``model_final.zip`` (``--model``), or the demo's (configs/tiny.yaml on the seed-0
sample data, trained here without MLflow). It is saved as the registered model is (processor/serving.py
logged from code, the ``processor`` package as its code) into a temporary MLflow model directory, then:

  in-process -- ``mlflow.pyfunc.load_model(dir).predict(frame)``: 1-event (``--calls``), 20-event and
                1,000-event requests, p50/p90/p99 latency and events/s (at p50)
  http       -- the same requests as ``{"inputs": [...]}`` to ``mlflow models serve`` on 127.0.0.1 (one
                kept-alive connection), after a warm-up
  floor      -- the bare forward pass of the loaded package's model on pre-tokenized events: what no
                serving path can beat; and the other steps of a 1,000-event request timed alone
                (contract check, rendering, tokenizing, drift)
  qwen       -- (``--qwen``) the Qwen2.5-0.5B stand-in (demo_kit.qwen_standin, random weights) with a
                fresh LoRA adapter (r 16, all linear layers), packaged and loaded like a run's zip:
                events/s of ``PackagedModel.predict`` over a batch

Every figure comes with the load average when it was taken (the machine is shared: figures under load
are slower, not wrong). Written to benchmarks/results/serving.json under ``--label`` (default
``after``), beside what other labels hold: the "before" row was this script run with PYTHONPATH at
the code before issue 28 (see docs/serving.md). Loops are bounded: the whole run takes 1-3 minutes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench_predict import sample_events, train_tiny

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "serving.json"
SIZES = (1, 20, 1000)
TARGETS = {"in_process_1_p50_ms": 5.0, "in_process_1000_events_per_s": 10_000.0, "http_1_p50_ms": 15.0}


def load_avg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def figures(seconds: list[float], n_events: int) -> dict[str, Any]:
    """p50/p90/p99 in ms and events/s at p50, with the load average now."""
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {"events": n_events, "calls": len(ms), "p50_ms": round(q[49], 3), "p90_ms": round(q[89], 3),
            "p99_ms": round(q[98], 3), "events_per_s": round(n_events / (q[49] / 1000), 1), "load_avg": load_avg()}


def timed(call: Any, calls: int, budget_s: float) -> list[float]:
    """Up to ``calls`` timings of ``call()``, stopping early once ``budget_s`` is spent (at least 3)."""
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
        if len(out) >= 3 and time.perf_counter() - start > budget_s:
            break
    return out


def calls_for(n_events: int, single: int) -> int:
    return {1: single, 20: max(single // 2, 3)}.get(n_events, 5)


def save_pyfunc(zip_path: Path, target: Path) -> Path:
    """The registered model's layout (processor.tracking.log_pyfunc) in a local directory, no tracking."""
    import mlflow

    from processor import serving
    from processor.signature import model_signature
    from processor.tracking import _code_dir

    stage = target.parent / "code"
    mlflow.pyfunc.save_model(
        path=str(target), python_model=Path(serving.__file__), code_paths=[str(_code_dir(stage))],
        artifacts={serving.ZIP_ARTIFACT: str(zip_path)}, signature=model_signature(None),
        pip_requirements=["mlflow"])
    return target


def in_process(model_dir: Path, events: list[dict[str, Any]], single: int) -> dict[str, Any]:
    import mlflow
    import pandas as pd
    import torch

    pyfunc = mlflow.pyfunc.load_model(str(model_dir))
    out = {}
    for n in SIZES:
        frame = pd.DataFrame(events[:n])
        for _ in range(3 if n < 1000 else 1):
            pyfunc.predict(frame)  # warm-up
        out[str(n)] = figures(timed(lambda: pyfunc.predict(frame), calls_for(n, single), 25), n)
        print(f"  in-process {n:>5} events: {out[str(n)]}", flush=True)
    out["torch_threads"] = torch.get_num_threads()  # as the model's load left it
    if (os.cpu_count() or 1) > 1 and out["torch_threads"] == 1:
        # What a second thread would buy a large batch (PROCESSOR_TORCH_THREADS=2 on a quiet host).
        torch.set_num_threads(2)
        try:
            frame = pd.DataFrame(events[:1000])
            pyfunc.predict(frame)
            out["1000_at_2_threads"] = figures(timed(lambda: pyfunc.predict(frame), 5, 25), 1000)
            print(f"  in-process  1000 events, 2 threads: {out['1000_at_2_threads']}", flush=True)
        finally:
            torch.set_num_threads(out["torch_threads"])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(model_dir: Path, events: list[dict[str, Any]], single: int, log: Path) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with log.open("wb") as fh:
        # Own session, so the server and its uvicorn worker are stopped together below.
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        conn = _wait_up(port, proc, log)
        out = {}
        for n in SIZES:
            body = json.dumps({"inputs": events[:n]})

            def call() -> None:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                data = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"HTTP {answer.status}: {data[:500]!r}")

            for _ in range(3 if n < 1000 else 1):
                call()
            out[str(n)] = figures(timed(call, calls_for(n, single), 25), n)
            print(f"  http       {n:>5} events: {out[str(n)]}", flush=True)
        return out
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (AttributeError, ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_up(port: int, proc: subprocess.Popen, log: Path, timeout: float = 180) -> http.client.HTTPConnection:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", "/ping")
            if conn.getresponse().read() is not None:
                return conn
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow models serve not up after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def floor(zip_path: Path, events: list[dict[str, Any]], single: int) -> dict[str, Any]:
    """The loaded package's forward pass alone, on events tokenized beforehand (batches of 64)."""
    import torch

    from processor.package import load_packaged_model

    packaged = load_packaged_model(zip_path)
    try:
        texts = packaged_serializer(packaged).render_all(events)
        model, tok, max_length = packaged.model, packaged.tokenizer, packaged.spec.max_length
        model.eval()
        batches = [tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                   for i in range(0, len(texts), 64)]
        one = tok(texts[:1], truncation=True, max_length=max_length, return_tensors="pt")

        def run(encs: list[Any]) -> None:
            with torch.no_grad():
                for enc in encs:
                    model(**enc)

        for _ in range(3):
            run([one])
        out = {"1": figures(timed(lambda: run([one]), single, 15), 1)}
        run(batches[:1])
        out[str(len(texts))] = figures(timed(lambda: run(batches), 5, 25), len(texts))
        out["merged"] = not hasattr(model, "peft_config")
        out["torch_threads"] = torch.get_num_threads()
        print(f"  floor: {out}", flush=True)
        out["stages_1000_ms"] = stages(packaged, events, batches)
        return out
    finally:
        packaged.close()


def stages(packaged: Any, events: list[dict[str, Any]], batches: list[Any]) -> dict[str, float]:
    """p50 ms of each step a request of these events goes through besides the forward pass."""
    import pandas as pd

    from processor.predict import check_frame

    frame = pd.DataFrame(events)
    checked = check_frame(frame)
    serializer = packaged_serializer(packaged)
    texts = serializer.render_all(checked)
    tok, max_length = packaged.tokenizer, packaged.spec.max_length
    steps = {
        "contract_check": lambda: check_frame(frame),
        "render": lambda: serializer.render_all(checked),
        "tokenize": lambda: [tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_length,
                                 return_tensors="pt") for i in range(0, len(texts), 64)],
        "drift": lambda: packaged.drift(checked),
    }
    out = {name: round(statistics.median(timed(step, 5, 10)) * 1000, 2) for name, step in steps.items()}
    out["load_avg"] = load_avg()
    print(f"  stages of {len(events)} events (ms): {out}", flush=True)
    return out


def packaged_serializer(packaged: Any) -> Any:
    from processor.serialize import Serializer

    return Serializer.from_dict(packaged.spec.serialization)  # the same in every version of the package


def qwen_row(work: Path, standin: Path | None, sample_dir: Path, n_events: int) -> dict[str, Any]:
    """events/s of PackagedModel.predict with the 0.5B stand-in and a fresh LoRA adapter."""
    import torch

    from processor import drift
    from processor.data import load_events
    from processor.io import weights_sha256
    from processor.model import apply_lora, load_for_classification, resolve_model
    from processor.package import load_packaged_model, write_package
    from demo_kit.qwen_standin import build_standin
    from processor.schema import FEATURES, LABELS, schema_fingerprint
    from processor.serialize import Serializer

    if standin is None:
        standin = build_standin(work / "qwen-standin", "0.5b", seed=0)
    resolved = resolve_model(str(standin))
    torch.manual_seed(0)
    base, tokenizer = load_for_classification(resolved, labels=LABELS)
    model = apply_lora(base, r=16, alpha=32, dropout=0.0)
    with torch.no_grad():  # a trained adapter is not zero: the merge must have something to fold
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    train = load_events(sample_dir / "train.jsonl")
    serializer = Serializer.fit(train, template="qwen-v1")
    serving = {"base": {"name": str(resolved.path), "base_id": resolved.base_id, "revision": resolved.revision,
                        "is_demo": False, "weights_sha256": weights_sha256(resolved.path)},
               "template": serializer.template, "serialization": serializer.to_dict(), "max_length": 64,
               "labels": list(LABELS), "schema_fingerprint": schema_fingerprint(), "features": list(FEATURES),
               "feature_profile": drift.fit_profile(train)}
    zip_path = write_package(work / "qwen" / "model_final.zip", model=model, tokenizer=tokenizer, serving=serving,
                             metrics={"val_macro_f1": 0.0})
    del model, base
    packaged = load_packaged_model(zip_path)
    try:
        events = train[["id", *FEATURES]].head(n_events).to_dict(orient="records")
        packaged.predict(events[:8], batch_size=64)  # warm-up
        seconds = timed(lambda: packaged.predict(events, batch_size=64), 2, 60)
        out = {**figures(seconds, len(events)), "template": "qwen-v1", "batch_size": 64,
               "merged": not hasattr(packaged.model, "peft_config"), "torch_threads": torch.get_num_threads()}
        print(f"  qwen 0.5B stand-in: {out}", flush=True)
        return out
    finally:
        packaged.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="model_final.zip to serve (default: train the demo model)")
    p.add_argument("--label", default="after", help="key of this run in the results file (default: after)")
    p.add_argument("--calls", type=int, default=200, help="one-event calls per path (default 200)")
    p.add_argument("--no-http", action="store_true", help="skip mlflow models serve")
    p.add_argument("--qwen", action="store_true", help="add the Qwen2.5-0.5B stand-in row (builds ~1 GB)")
    p.add_argument("--qwen-only", action="store_true", help="measure only the stand-in row (keeps the label's other figures)")
    p.add_argument("--standin", type=Path, help="reuse a 0.5b stand-in directory (python -m demo_kit.qwen_standin)")
    p.add_argument("--qwen-events", type=int, default=128, help="events in the stand-in's batch (default 128)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(HERE.parent)})")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import processor

    started = time.perf_counter()
    run: dict[str, Any] = {"date": date.today().isoformat(), "code": str(Path(processor.__file__).parent),
                           "load_avg_start": load_avg()}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        if not args.qwen_only:
            demo(args, work, run)
        if args.qwen or args.qwen_only:
            from demo_kit.sample_data import write_sample_data

            write_sample_data(work / "data", seed=0)
            run["qwen_standin_0.5b"] = qwen_row(work, args.standin, work / "data", args.qwen_events)
    if not args.qwen_only:
        run["load_avg_end"] = load_avg()
        run["seconds"] = round(time.perf_counter() - started, 1)
        run["targets"] = {name: {"target": target, "met": _met(run, name, target)} for name, target in TARGETS.items()}

    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results.setdefault("machine", {"cpus": os.cpu_count(), "platform": platform.platform(),
                                   "python": platform.python_version()})
    previous = results.setdefault("runs", {}).get(args.label, {})
    if args.qwen_only:
        run = {**previous, "qwen_standin_0.5b": run["qwen_standin_0.5b"]}
    elif "qwen_standin_0.5b" in previous and not args.qwen:
        run["qwen_standin_0.5b"] = previous["qwen_standin_0.5b"]  # a run without --qwen keeps that row
    results["runs"][args.label] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(run.get("targets")), f"\n{round(time.perf_counter() - started, 1)} s -> {args.out}")
    return 0


def demo(args: argparse.Namespace, work: Path, run: dict[str, Any]) -> None:
    """The demo model's rows: in-process, the floor and (unless --no-http) over HTTP."""
    zip_path = args.model
    if zip_path is None:
        print("training the demo model (configs/tiny.yaml, seed-0 sample data) ...", flush=True)
        zip_path = train_tiny(work)
    run["model"] = str(args.model) if args.model else "demo: configs/tiny.yaml on seed-0 sample data"
    events = sample_events(1000, seed=0)
    model_dir = save_pyfunc(Path(zip_path), work / "pyfunc" / "model")
    run["in_process"] = in_process(model_dir, events, args.calls)
    run["floor"] = floor(Path(zip_path), events, args.calls)
    if not args.no_http:
        run["http"] = over_http(model_dir, events, max(args.calls // 2, 10), work / "serve.log")


def _met(run: dict[str, Any], name: str, target: float) -> bool | None:
    path, key = {"in_process_1_p50_ms": (("in_process", "1"), "p50_ms"),
                 "in_process_1000_events_per_s": (("in_process", "1000"), "events_per_s"),
                 "http_1_p50_ms": (("http", "1"), "p50_ms")}[name]
    value = run.get(path[0], {}).get(path[1], {}).get(key)
    if value is None:
        return None
    return value <= target if key.endswith("_ms") else value >= target


if __name__ == "__main__":
    sys.exit(main())
