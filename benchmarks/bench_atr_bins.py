"""Does rules v3 need the raw ``atr``? The GBDT baseline with atr as the LLM's template gives it.

    python benchmarks/bench_atr_bins.py                       # v3, the three mixes, selection seeds 100-102
    python benchmarks/bench_atr_bins.py --seeds 0 1 2

v3's cut-off depends on a volatility regime read from ``atr`` (``demo_kit.rules.volatile``), and the
``words-v1`` template shows ``atr`` only as one of 10 quantile bins fitted on train. If the bins hid the
regime, a tree given the same bins would fall behind the tree given the raw value. For every (mix, seed)
this fits the project's GBDT baseline (``processor.evaluate.baselines``, no LLM, seconds per split) with
``atr`` as: the raw value; its ``words-v1`` bin (the template's own edges, ``processor.serialize``);
40 quantile bins; and the regime itself (``volatile``, an oracle feature). Prints val macro-F1 per mix
(mean over seeds) next to the Bayes ceiling and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MIXES = ("default", "rare", "balanced")
VARIANTS = ("raw", "words-v1 bins (10)", "40 bins", "oracle regime")


def _with_atr(frame, values):
    out = frame.copy()
    out["atr"] = np.asarray(values, dtype=float)
    return out


def one_split(mix: str, seed: int, work: Path) -> dict:
    from processor.bins import bin_index, quantile_edges
    from processor.data import load_split
    from processor.evaluate import baselines
    from demo_kit.rules import volatile
    from demo_kit.sample_data import write_sample_data
    from processor.serialize import Serializer

    card = write_sample_data(work / f"{mix}-{seed}", seed=seed, rules="v3", mix=mix)
    train, val = load_split(work / f"{mix}-{seed}" / "train.jsonl", work / f"{mix}-{seed}" / "val.jsonl")
    words = Serializer.fit(train).edges["atr"]
    fine = quantile_edges(train["atr"], 40)

    def encodings(frame):
        atr = frame["atr"].to_numpy(dtype=float)
        return {"raw": atr, "words-v1 bins (10)": bin_index(words, atr), "40 bins": bin_index(fine, atr),
                "oracle regime": [float(volatile(a)) for a in atr]}

    tr, va = encodings(train), encodings(val)
    scores = {v: baselines(_with_atr(train, tr[v]), _with_atr(val, va[v]), seed=seed)["hist_gradient_boosting"]
              ["val_macro_f1"] for v in VARIANTS}
    return {"mix": mix, "seed": seed, **scores, "ceiling": card["bayes_ceiling"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--out", type=Path, default=HERE / "results" / "atr_bins.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-atr-") as tmp:
        runs = [one_split(mix, seed, Path(tmp)) for mix in MIXES for seed in args.seeds]
    lines = ["| v3 mix | " + " | ".join(f"GBDT, atr {v}" for v in VARIANTS) + " | Bayes ceiling |",
             "|---|" + "---|" * (len(VARIANTS) + 1)]
    for mix in MIXES:
        rs = [r for r in runs if r["mix"] == mix]
        lines.append(f"| {mix} | " + " | ".join(f"{statistics.fmean(r[c] for r in rs):.3f}"
                                               for c in (*VARIANTS, "ceiling")) + " |")
    text = "\n".join(lines)
    print(text)
    from processor.io import write_json_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"date": time.strftime("%Y-%m-%d"), "seeds": args.seeds, "runs": runs,
                                 "table_markdown": text})
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
