"""Quality of the default config against the classic baselines, over rule sets, class mixes and seeds.

    python benchmarks/bench_quality.py                     # v1/v2/v3 x default/rare/balanced x seeds 0,1,2
    python benchmarks/bench_quality.py --seeds 100 101     # other seeds (how configs/tiny.yaml was chosen)
    python benchmarks/bench_quality.py --rules v3 --update # only the v3 rows, merged into the results file
    python benchmarks/bench_quality.py --config configs/tiny.yaml --set training.lr=1e-3   # a variant
    python benchmarks/bench_quality.py --seeds 100 101 102 --template qwen-v1 --out benchmarks/results/quality_qwen_v1.json

For every (rules, mix, seed) it writes the project's sample data (``demo_kit.sample_data``, data seed =
``seed``), trains the config on it exactly as ``make demo`` would (training seed = ``seed``, no MLflow), and
runs the shipping gate on the output (``gates/gate.py --output-dir``, the default check file). Per row it
reports the mean and sample sd over the seeds of: the LLM's val macro-F1 and F1(long)/F1(short), the
gradient-boosted tree, the tuned tree (``tuned_gbdt``: LightGBM tuned by CV on train) and the logistic
regression on the same split (``metrics.json`` baselines), the
Bayes ceiling of the data (the noise-free rules scored on the noisy val labels), how many seeds pass the
shipping checks, how many seeds had sufficient evidence (every class with at least ``MIN_SUPPORT``
val events), and the seconds per training run. ``--template`` trains with another event template
(``data.template``) on the demo base built for it (its tokenizer and pretraining read that template);
``--recipe`` trains on a demo base built with another recipe (e.g. a longer pretraining).
Printed as a Markdown table and written, with every single run, to ``benchmarks/results/quality.json``
(``--out`` to change). ``--update`` keeps the runs already in that file (same config, overrides and
seeds) and replaces only the rows run now.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processor.gate import load_thresholds
from processor.schema import LABELS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RULES = ("v1", "v2", "v3")
MIXES = ("default", "rare", "balanced")
# A class F1 measured on fewer val events is not evidence (one event moves it by ~0.02 at 25 events):
# the floor of the gate's min_support check, as gates/ship_checks.yaml sets it.
MIN_SUPPORT = load_thresholds().min_support_events


def base_overrides(template: str | None, recipe: list[str] | None = None) -> list[str]:
    """``data.template`` and ``model`` for a demo base built from another recipe: its tokenizer and
    pretraining read ``template``'s corpus, and ``recipe`` sets other :class:`TinyRecipe` fields
    (``pretrain_steps=1600``). Nothing asked, nothing changed: the config's own base."""
    if template is None and not recipe:
        return []
    from dataclasses import fields

    from demo_kit.tiny_base import TinyRecipe, build_qwen_tiny

    types = {f.name: f.type for f in fields(TinyRecipe)}
    changes: dict = {} if template is None else {"template": template}
    for text in recipe or []:
        key, _, value = text.partition("=")
        if types.get(key) not in ("int", "float"):
            raise ValueError(f"--recipe {text!r}: not a numeric TinyRecipe field (one of "
                             f"{', '.join(k for k, t in types.items() if t in ('int', 'float'))})")
        try:
            changes[key] = int(value) if types[key] == "int" else float(value)
        except ValueError:
            raise ValueError(f"--recipe {text!r}: {value!r} is not {'an integer' if types[key] == 'int' else 'a number'}"
                             ) from None
    base = build_qwen_tiny(recipe=TinyRecipe(**changes))
    return [*([] if template is None else [f"data.template={template}"]), f"model={base}"]


def one_run(config: Path, overrides: list[str], rules: str, mix: str, seed: int, work: Path) -> dict:
    from processor.config import apply_override, check, load_config, parse_override
    from demo_kit.sample_data import write_sample_data
    from processor.train_loop import train

    data = work / f"{rules}-{mix}-{seed}"
    card = write_sample_data(data, seed=seed, rules=rules, mix=mix)
    cfg = load_config(config, {"data.train_file": str(data / "train.jsonl"), "data.val_file": str(data / "val.jsonl"),
                               "packaging.output_dir": str(data / "out"), "seed": seed, "mlflow.enabled": False})
    for text in overrides:
        key, value = parse_override(text)
        apply_override(cfg, key, value, source=text)
    check(cfg)
    started = time.perf_counter()
    m = train(cfg).record
    seconds = time.perf_counter() - started
    gate = subprocess.run([sys.executable, str(REPO / "gates" / "gate.py"), "--output-dir", str(data / "out")],
                          capture_output=True, text=True, cwd=REPO)
    if gate.returncode not in (0, 1):
        raise RuntimeError(f"gate failed to run on {data / 'out'}: {gate.stderr.strip()}")
    support = min(m.support(name) for name in LABELS)  # the thinnest class decides
    return {
        "rules": rules, "mix": mix, "seed": seed,
        "llm": m.macro_f1, "f1_long": m.class_f1("long"), "f1_short": m.class_f1("short"),
        "gbdt": m.baseline_f1("hist_gradient_boosting"), "logreg": m.baseline_f1("logistic_regression"),
        "tuned_gbdt": m.baseline_f1("tuned_gbdt"),
        "ceiling": card["bayes_ceiling"], "passes_gate": gate.returncode == 0,
        "min_val_support": support, "evidence_sufficient": support >= MIN_SUPPORT,
        "best_epoch": m.best_epoch, "epochs_run": m.epochs_run, "tokens_per_event": m.tokens_per_event,
        "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d"),
    }


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(runs: list[dict]) -> tuple[str, list[dict]]:
    lines = ["| rules | mix | LLM val macro-F1 | lowest LLM run | GBDT | tuned GBDT | logistic regression | Bayes ceiling | F1 long "
             f"| F1 short | LLM ≥ GBDT | LLM ≥ tuned GBDT | passes gate | evidence (val support ≥ {MIN_SUPPORT}) "
             "| s / run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for rules in RULES:
        for mix in MIXES:
            rs = [r for r in runs if r["rules"] == rules and r["mix"] == mix]
            if not rs:
                continue
            col = {k: [r[k] for r in rs] for k in ("llm", "gbdt", "logreg", "ceiling", "f1_long", "f1_short", "seconds")}
            row = {"rules": rules, "mix": mix, "n": len(rs),
                   **{f"{k}_mean": statistics.fmean(v) for k, v in col.items()},
                   "passes_gate": sum(r["passes_gate"] for r in rs),
                   # None for runs recorded before the evidence was reported.
                   "evidence_sufficient": None if any("evidence_sufficient" not in r for r in rs)
                   else sum(r["evidence_sufficient"] for r in rs)}
            row["llm_sd"] = statistics.stdev(col["llm"]) if len(rs) > 1 else 0.0
            row["llm_min"] = min(col["llm"])  # a collapsed run shows here, not in the mean
            row["llm_at_least_gbdt"] = row["llm_mean"] >= row["gbdt_mean"]
            # The tuned tree (issue 26); None for runs recorded before it was fitted.
            tuned = [r.get("tuned_gbdt") for r in rs]
            known = all(v is not None for v in tuned)
            row["tuned_gbdt_mean"] = statistics.fmean(tuned) if known else None
            row["tuned_gbdt_sd"] = (statistics.stdev(tuned) if len(tuned) > 1 else 0.0) if known else None
            row["llm_at_least_tuned_gbdt"] = row["llm_mean"] >= row["tuned_gbdt_mean"] if known else None
            sufficient = row["evidence_sufficient"]
            evidence = "not recorded" if sufficient is None else f"{sufficient}/{len(rs)}"
            rows.append(row)
            versus = {True: "yes", False: "no", None: "not recorded"}
            lines.append(f"| {rules} | {mix} | {_ms(col['llm'])} | {row['llm_min']:.3f} | {_ms(col['gbdt'])} "
                         f"| {_ms(tuned) if known else 'not recorded'} | {_ms(col['logreg'])} "
                         f"| {_ms(col['ceiling'])} | {_ms(col['f1_long'])} | {_ms(col['f1_short'])} "
                         f"| {versus[row['llm_at_least_gbdt']]} | {versus[row['llm_at_least_tuned_gbdt']]} "
                         f"| {row['passes_gate']}/{len(rs)} "
                         f"| {evidence} "
                         f"| {statistics.fmean(col['seconds']):.0f} |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    p.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (a variant to compare)")
    p.add_argument("--template", help="event template to train with (default: the config's), on its own demo base")
    p.add_argument("--recipe", action="append", default=[], metavar="FIELD=VALUE",
                   help="train on a demo base built with this TinyRecipe field changed (pretrain_steps=1600)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "quality.json")
    p.add_argument("--update", action="store_true",
                   help="keep the runs already in --out (same config, overrides and seeds) and replace only "
                        "the (rules, mix, seed) runs made now, e.g. --rules v3 --update")
    args = p.parse_args(argv)
    try:
        args.overrides = base_overrides(args.template, args.recipe) + args.overrides
    except ValueError as exc:
        p.error(str(exc))
    config = str(args.config.relative_to(REPO) if args.config.is_absolute() and args.config.is_relative_to(REPO)
                 else args.config)
    try:
        kept = _kept_runs(args.out, config, args.overrides, args.seeds) if args.update else []
    except ValueError as exc:
        p.error(str(exc))  # exit 2, before any training

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for rules in args.rules:
            for mix in args.mixes:
                for seed in args.seeds:
                    run = one_run(args.config, args.overrides, rules, mix, seed, Path(tmp))
                    runs.append(run)
                    print(f"{rules} {mix} seed {seed}: LLM {run['llm']:.3f}  GBDT {run['gbdt']:.3f}  "
                          f"tuned GBDT {run['tuned_gbdt']:.3f}  "
                          f"gate {'pass' if run['passes_gate'] else 'FAIL'}  {run['seconds']:.0f} s", flush=True)
    done = {(r["rules"], r["mix"], r["seed"]) for r in runs}
    runs = [r for r in kept if (r["rules"], r["mix"], r["seed"]) not in done] + runs
    text, rows = table(runs)
    print()
    print(text)
    from processor.io import write_json_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {
        "date": time.strftime("%Y-%m-%d"), "config": config,
        "overrides": args.overrides, "seeds": args.seeds, "machine": f"{platform.machine()}, {_cores()} cores",
        "rows": rows, "runs": runs, "table_markdown": text})
    print(f"\nwritten to {args.out}")
    return 0


def _kept_runs(out: Path, config: str, overrides: list[str], seeds: list[int]) -> list[dict]:
    """The runs of an earlier results file, if it measured the same thing (else a ValueError)."""
    import json

    if not out.is_file():
        return []
    old = json.loads(out.read_text(encoding="utf-8"))
    mine = {"config": config, "overrides": overrides, "seeds": seeds}
    theirs = {k: old.get(k) for k in mine}
    if theirs != mine:
        raise ValueError(f"--update: {out} holds runs of {theirs}, not {mine}; use another --out")
    return list(old["runs"])


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
