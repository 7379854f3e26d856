"""Wall time of one default training run: `configs/tiny.yaml` on the demo's sample data (seed 0), each case
in a fresh process, as `python -m processor.train_loop ... --no-mlflow` runs it.

    python benchmarks/bench_run.py                # 2 repeats of each case
    python benchmarks/bench_run.py --repeats 3

Cases:
  default       -- the train loop as shipped: the classic baselines fitted by their own process
                   (processor.baseline_job) while the LLM trains; also how long its evaluate phase
                   waited for them (`waited`)
  no_baselines  -- `eval.baselines=false`: what the baselines still add to a run's wall time
  baselines     -- processor.evaluate.fit_baselines alone, in one process after its imports: what the
                   evaluate phase would wait for if they were fitted there, after training
Each case runs alone (one after another), so the default run has the second core to itself as on a quiet
machine. Results are printed and written to benchmarks/results/run.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "run.json"

# The train loop, timing how long the evaluate phase waits for the baselines' process.
DEFAULT_RUN = """
import sys, time
from processor import baseline_job, train_loop
result = baseline_job.PendingBaselines.result
def timed(self):
    started = time.perf_counter()
    try:
        return result(self)
    finally:
        print(f"waited {time.perf_counter() - started:.2f}")
baseline_job.PendingBaselines.result = timed
sys.exit(train_loop.main(sys.argv[1:]))
"""
BASELINES_ALONE = """
import sys, time
import pandas as pd
from processor.config import Config
from processor.evaluate import fit_baselines
train, val = (pd.read_json(p, lines=True) for p in sys.argv[1:3])
cfg = Config(seed=int(sys.argv[3]))
started = time.perf_counter()
fit_baselines(train, val, seed=cfg.seed, names=cfg.eval.baseline_names(), search=cfg.eval.tree_search())
print(time.perf_counter() - started)
"""


def train_args(data: Path, out: Path, seed: int, *extra: str, entry: tuple[str, ...] = ("-m", "processor.train_loop")
               ) -> list[str]:
    return [sys.executable, *entry, *extra, "--config", str(ROOT / "configs" / "tiny.yaml"),
            "--train-file", str(data / "train.jsonl"), "--val-file", str(data / "val.jsonl"), "--seed", str(seed),
            "--no-mlflow", "--output-dir", str(out), "--overwrite"]


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the sample data's seed and the run's (the demo: 0)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {"default": [], "waited": [], "no_baselines": [], "baselines": []}
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "demo_kit.sample_data", "--out", str(data), "--seed", str(args.seed)],
                       check=True, capture_output=True, cwd=ROOT)
        for _ in range(args.repeats):
            wall, printed = timed(train_args(data, out, args.seed, entry=("-c", DEFAULT_RUN)))
            seconds["default"].append(wall)
            seconds["waited"].append(float(printed.split("waited ")[1].split()[0]))
            seconds["no_baselines"].append(timed(train_args(data, out, args.seed, "eval.baselines=false"))[0])
            _, printed = timed([sys.executable, "-c", BASELINES_ALONE, str(data / "train.jsonl"),
                                str(data / "val.jsonl"), str(args.seed)])
            seconds["baselines"].append(float(printed.strip().splitlines()[-1]))
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats, "seed": args.seed,
        "seconds": {case: [round(s, 1) for s in values] for case, values in seconds.items()},
        "median": {case: round(statistics.median(values), 1) for case, values in seconds.items()},
    }
    for case, values in result["seconds"].items():
        print(f"{case:13s} median {result['median'][case]:6.1f} s  runs {values}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
