"""What prediction-level levers would add on top of one run: an ensemble of K runs, a decision offset.

    python benchmarks/bench_levers.py --rules v3 --seeds 100 101 102 --members 3
    python benchmarks/bench_levers.py --rules v1 v2 --seeds 100 101 102 --members 3 --out benchmarks/results/levers_v12.json

For every (rules, mix, seed) it writes the sample data as ``bench_quality.py`` does and trains the config
``--members`` times on it, with training seeds ``seed``, ``seed + 1000``, ... (data seed always ``seed``;
member 0 is exactly bench_quality's run). Each member's ``model_final.zip`` is loaded and predicts val
through the package (``PackagedModel.predict_proba``: the probabilities as they ship), and val macro-F1 is
reported for:

- ``single``: member 0 alone (today's shipped model);
- ``member mean``: the mean over the members' own scores (what one run gives on average);
- ``ensemble``: the members' shipped probabilities averaged, then argmax (issue 21's "several adapters
  averaged", measured before building it into the package: same adapters, same average);
- ``single + offset`` / ``ensemble + offset``: a per-class additive decision offset on the log
  probabilities, chosen to maximise macro-F1, **cross-fitted**: every val event is scored with an offset
  fitted on the other stratified val folds, never on itself.

Printed as a Markdown table (mean over seeds per row, then over all runs) and written to ``--out``.
Costs ``--members`` x bench_quality's training time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_quality import MIXES, RULES

OFFSETS = np.round(np.arange(-1.5, 1.501, 0.1), 2)  # log-probability offsets tried for long and short
FOLDS = 5


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0))


def fit_offset(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The (long, short, 0) offset with the best macro-F1 on these events; ties go to the smallest."""
    best, chosen = -1.0, np.zeros(3)
    for a in OFFSETS:
        for b in OFFSETS:
            offset = np.array([a, b, 0.0])
            score = macro_f1(y, (logp + offset).argmax(axis=1))
            if score > best + 1e-12 or (abs(score - best) <= 1e-12 and np.abs(offset).sum() < np.abs(chosen).sum()):
                best, chosen = score, offset
    return chosen


def cross_fitted_offset_f1(logp: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Macro-F1 with each event's offset fitted on the other folds only."""
    from sklearn.model_selection import StratifiedKFold

    pred = np.zeros(len(y), dtype=int)
    for fit_idx, score_idx in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(logp, y):
        pred[score_idx] = (logp[score_idx] + fit_offset(logp[fit_idx], y[fit_idx])).argmax(axis=1)
    return macro_f1(y, pred)


def one_split(config: Path, overrides: list[str], rules: str, mix: str, seed: int, members: int, work: Path
              ) -> dict:
    from bench_quality import one_run

    from processor.data import load_events, records
    from processor.package import load_packaged_model
    from processor.schema import LABELS

    probs, runs = [], []
    for m in range(members):
        run = one_run(config, [*overrides, f"seed={seed + 1000 * m}"], rules, mix, seed, work / f"m{m}")
        split = work / f"m{m}" / f"{rules}-{mix}-{seed}"
        if m == 0:  # every member trains on the same data (data seed = seed)
            val = load_events(split / "val.jsonl")
            events, y = records(val), np.array([LABELS.index(label) for label in val["label"]])
        model = load_packaged_model(split / "out" / "model_final.zip")
        try:
            probs.append(model.predict_proba(events))
        finally:
            model.close()
        runs.append(run)
        print(f"{rules} {mix} seed {seed} member {m}: {run['llm']:.3f}  {run['seconds']:.0f} s", flush=True)
    single = probs[0].argmax(axis=1)
    ensemble = np.log(np.clip(np.mean(probs, axis=0), 1e-12, None))
    return {
        "rules": rules, "mix": mix, "seed": seed, "members": members,
        "single": macro_f1(y, single), "member_mean": statistics.fmean(r["llm"] for r in runs),
        "members_f1": [r["llm"] for r in runs],
        "ensemble": macro_f1(y, ensemble.argmax(axis=1)),
        "single_offset": cross_fitted_offset_f1(np.log(np.clip(probs[0], 1e-12, None)), y, seed),
        "ensemble_offset": cross_fitted_offset_f1(ensemble, y, seed),
        "gbdt": runs[0]["gbdt"], "ceiling": runs[0]["ceiling"],
        "seconds_per_member": statistics.fmean(r["seconds"] for r in runs),
    }


COLUMNS = ("single", "member_mean", "ensemble", "single_offset", "ensemble_offset", "gbdt", "ceiling")


def table(runs: list[dict]) -> str:
    header = ("| rules | mix | single run | member mean | ensemble | single + offset | ensemble + offset | GBDT "
              "| Bayes ceiling |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    groups = [(r, m) for r in RULES for m in MIXES if any(x["rules"] == r and x["mix"] == m for x in runs)]
    for rules, mix in [*groups, ("all", "")]:
        rs = [x for x in runs if rules == "all" or (x["rules"] == rules and x["mix"] == mix)]
        cells = " | ".join(f"{statistics.fmean(x[c] for x in rs):.3f}" for c in COLUMNS)
        lines.append(f"| {rules} | {mix} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    p.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES))
    p.add_argument("--members", type=int, default=3, help="training runs per split (seeds seed + 1000 k)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=HERE / "results" / "levers.json")
    args = p.parse_args(argv)
    if args.members < 1:
        p.error("--members must be at least 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-levers-") as tmp:
        for rules in args.rules:
            for mix in args.mixes:
                for seed in args.seeds:
                    runs.append(one_split(args.config, args.overrides, rules, mix, seed, args.members, Path(tmp)))
    text = table(runs)
    print()
    print(text)
    from processor.io import write_json_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"date": time.strftime("%Y-%m-%d"), "config": str(args.config),
                                 "overrides": args.overrides, "seeds": args.seeds, "members": args.members,
                                 "machine": f"{platform.machine()}", "runs": runs, "table_markdown": text})
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
