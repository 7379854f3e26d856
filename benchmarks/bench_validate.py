"""Benchmark: how fast does the loader validate a large event file?

Generates N valid events (seeded, a mix of the allowed coercions: 0/1 flags, 2.0 ints, optional keys)
in a temp dir, times ``load_events`` (best of ``--repeat``) and the invalid path (same file with 1% of
records broken, all problems collected), prints the figures and writes ``benchmarks/results/validate.json``.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_validate.py [--events 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from processor.contract_check import ContractError
from processor.data import load_events
from processor.schema import FEATURES, LABELS, SESSIONS, schema_fingerprint

RESULTS = Path(__file__).resolve().parent / "results" / "validate.json"
_FLAGS = [k for k in FEATURES if k not in ("ext_dir", "int_dir", "mgann_leg_index", "wave_strength", "atr",
                                           "session")]


def _peak_rss_mib() -> float | None:
    try:
        import resource  # not available on Windows
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _event(rng: random.Random, i: int) -> dict[str, Any]:
    ev: dict[str, Any] = {"id": f"ev-{i:07d}"}
    if rng.random() < 0.5:
        ev["timestamp"] = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
        ev["symbol"] = rng.choice(["EURUSD", "XAUUSD", "GBPUSD"])
    ev["ext_dir"] = rng.choice([-1, 0, 1])
    ev["int_dir"] = rng.choice([-1, 0, 1])
    # Exporters often write 0/1 flags; mixing them in keeps the benchmark off the all-bool fast path.
    ints_for_flags = rng.random() < 0.2
    for flag in _FLAGS:
        b = rng.random() < 0.5
        ev[flag] = int(b) if ints_for_flags else b
    leg = rng.randint(0, 100)
    ev["mgann_leg_index"] = float(leg) if rng.random() < 0.05 else leg
    ev["wave_strength"] = round(rng.random(), 4)
    ev["atr"] = round(rng.uniform(1e-4, 50.0), 5)
    ev["session"] = rng.choice(SESSIONS)
    ev["label"] = rng.choice(LABELS)
    return ev


def _write(path: Path, events: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    events = [_event(rng, i) for i in range(args.events)]
    rss_before = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "events.jsonl"
        _write(good, events)
        size_mib = good.stat().st_size / 2**20

        timings = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            df = load_events(good)
            timings.append(time.perf_counter() - t0)
        assert len(df) == args.events

        bad_events = [dict(ev) for ev in events]
        broken = range(0, args.events, 100)
        for i in broken:
            bad_events[i]["atr"] = -1.0
        bad = Path(tmp) / "bad.jsonl"
        _write(bad, bad_events)
        t0 = time.perf_counter()
        try:
            load_events(bad)
            raise AssertionError("broken file passed validation")
        except ContractError as exc:
            n_problems = len(exc.problems)
        bad_seconds = time.perf_counter() - t0

    best = min(timings)
    result = {
        "benchmark": "load_events (JSONL parse + per-record type checks + Pandera lazy validation)",
        "events": args.events,
        "file_mib": round(size_mib, 2),
        "seconds_best": round(best, 3),
        "seconds_all": [round(t, 3) for t in timings],
        "events_per_second": round(args.events / best),
        "invalid_file": {"problems": n_problems, "seconds": round(bad_seconds, 3),
                         "events_per_second": round(args.events / bad_seconds)},
        "peak_rss_mib": _peak_rss_mib(),
        "peak_rss_mib_before_loading": rss_before,
        "contract_fingerprint": schema_fingerprint(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seed": args.seed,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, RESULTS)
    print(f"load_events: {args.events} events ({size_mib:.1f} MiB) in {best:.2f} s "
          f"= {args.events / best:,.0f} events/s (best of {args.repeat})")
    print(f"invalid file: {n_problems} problems collected in {bad_seconds:.2f} s")
    print(f"peak RSS: {result['peak_rss_mib']} MiB (before loading: {rss_before} MiB)")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
