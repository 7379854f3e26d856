"""Inference benchmark: batch throughput (events/s) and single-event latency (p50/p95) from model_final.zip.

    python benchmarks/bench_predict.py --zip outputs/demo/model_final.zip
    python benchmarks/bench_predict.py              # trains a tiny model first (configs/tiny.yaml, no MLflow)

Measures, on the CPU, through the project's own prediction path:
  load     -- ``load_packaged_model`` (zip verification, base + adapter + head rebuild)
  batch    -- ``PackagedModel.predict`` over ``--events`` events for each ``--batch-sizes`` entry
  single   -- one event per call, ``--single`` calls: the model alone, and with the serving-side
              contract check (``check_frame``) the pyfunc model runs on every request
Events are sampled with the seeded feature sampler. Prints the figures and writes
benchmarks/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "predict.json"


def train_tiny(work: Path) -> Path:
    """A tiny model trained on the default sample data, without MLflow (about a minute on 2 cores)."""
    from processor.config import load_config
    from demo_kit.sample_data import write_sample_data
    from processor.train_loop import train

    write_sample_data(work / "data", seed=0)
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "data.train_file": str(work / "data" / "train.jsonl"), "data.val_file": str(work / "data" / "val.jsonl"),
        "packaging.output_dir": str(work / "out")})
    cfg.mlflow.enabled = False
    return train(cfg).zip_path


def sample_events(n: int, seed: int) -> list[dict[str, Any]]:
    import numpy as np

    from demo_kit.sample_data import sample_features

    feats = sample_features(n, np.random.default_rng(seed))
    return [{"id": f"bench-{i:06d}", **f} for i, f in enumerate(feats)]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zip", type=Path, help="model_final.zip to measure (default: train a tiny one)")
    p.add_argument("--events", type=int, default=2000, help="events for the batch measurement")
    p.add_argument("--batch-sizes", default="16,64,256")
    p.add_argument("--single", type=int, default=200, help="single-event calls for the latency percentiles")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import pandas as pd
    import torch

    from processor.package import load_packaged_model
    from processor.predict import check_frame

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        zip_path = args.zip
        trained_here = zip_path is None
        if zip_path is None:
            print("no --zip given: training a tiny model first ...", flush=True)
            zip_path = train_tiny(Path(tmp))
        elif not zip_path.is_file():
            print(f"error: --zip {zip_path}: no such file", file=sys.stderr)
            return 2

        t0 = time.perf_counter()
        model = load_packaged_model(zip_path)
        load_s = time.perf_counter() - t0
        events = sample_events(args.events, args.seed)
        model.predict(events[:32])  # warm-up: first-call allocations are not steady state

        batch: dict[str, Any] = {}
        for size in (int(s) for s in args.batch_sizes.split(",")):
            t0 = time.perf_counter()
            model.predict(events, batch_size=size)
            seconds = time.perf_counter() - t0
            batch[str(size)] = {"seconds": round(seconds, 3), "events_per_second": round(len(events) / seconds, 1)}
            print(f"batch {size:>4}: {len(events)} events in {seconds:.2f}s = {len(events) / seconds:,.0f} events/s")

        model_only, with_check = [], []
        frames = [pd.DataFrame([ev]) for ev in events[:args.single]]
        for ev, frame in zip(events[:args.single], frames):
            t0 = time.perf_counter()
            model.predict([ev])
            t1 = time.perf_counter()
            model.predict(check_frame(frame))
            t2 = time.perf_counter()
            model_only.append((t1 - t0) * 1000)
            with_check.append((t2 - t1) * 1000)

        def lat(values: list[float]) -> dict[str, float]:
            return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2),
                    "mean_ms": round(statistics.fmean(values), 2)}

        single = {"calls": len(model_only), "model_only": lat(model_only), "with_contract_check": lat(with_check)}
        for name, vals in (("model only", model_only), ("with check_frame", with_check)):
            print(f"single event ({name}): p50 {percentile(vals, 50):.1f} ms, p95 {percentile(vals, 95):.1f} ms")
        print(f"zip load: {load_s:.2f}s")

        result = {
            "benchmark": "PackagedModel.predict from model_final.zip (CPU)",
            "model": model.serving.get("base", {}).get("name"),
            "zip": "trained by the benchmark (configs/tiny.yaml)" if trained_here else str(zip_path),
            "max_length": model.serving.get("max_length"),
            "load_seconds": round(load_s, 2),
            "events": len(events),
            "batch": batch,
            "single_event": single,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "seed": args.seed,
        }
        model.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, RESULTS)
    print(f"-> {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
