"""What a real Qwen2.5-0.5B costs on this CPU, per event template: LoRA training and inference events/s.

    python benchmarks/bench_qwen.py                      # builds the 0.5b stand-in in a temp dir (~1 GB)
    python benchmarks/bench_qwen.py --standin DIR        # reuse one (python -m demo_kit.qwen_standin --size 0.5b)

The model is the full-size stand-in (demo_kit.qwen_standin): Qwen2.5-0.5B's config, Qwen's real
vocabulary, random weights in a bf16 safetensors file. Random weights compute exactly as fast as trained
ones, and the real vocabulary gives the real sequence lengths: ``words-v1`` costs 28 Qwen tokens per
event, ``qwen-v1`` 13. For each template, in a fresh subprocess each (so peak RSS is per case):

  train -- the train loop's pieces: load (training.precision auto: fp32 on a CPU, the bf16 file upcast),
           LoRA r 16 on every linear layer + the score head, FocalTrainer, ``--steps`` optimizer steps
  infer -- batched prediction without gradients (package.predict_texts)

Printed and written to benchmarks/results/qwen.json. The machine's 2 cores are shared with other jobs,
so the figures are rough (the ratio between the templates is the robust part).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train import peak_rss_mb  # same measure as bench_train (VmHWM of this process)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "qwen.json"
TEMPLATES = ("words-v1", "qwen-v1")
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
MAX_LENGTH = 64  # above both templates' lengths: nothing is truncated, batches pad to their longest text


def texts_and_labels(n: int, template: str, seed: int = 0) -> tuple[list[str], list[str]]:
    import numpy as np

    from demo_kit.rules import label_event
    from demo_kit.sample_data import sample_features
    from processor.serialize import render_events

    feats = sample_features(n, np.random.default_rng(seed))
    return render_events(feats, template=template), [label_event(f) for f in feats]


def run_case(standin: str, template: str, mode: str, steps: int, batch: int) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

    from processor.encode import EncodedEvents
    from processor.loss import FocalLoss
    from processor.model import apply_lora, load_dtype, load_for_classification, resolve_model, resolve_precision
    from processor.package import predict_texts
    from processor.schema import LABELS
    from processor.serialize import count_tokens
    from processor.trainer import FocalTrainer

    set_seed(0)
    load_before = os.getloadavg()[0]  # other jobs on the shared cores: the figure's context
    precision = resolve_precision("auto", "cpu")
    base, tok = load_for_classification(resolve_model(standin), labels=LABELS, dtype=load_dtype(precision, "cpu"))
    model = apply_lora(base, **LORA)
    n = steps * batch
    texts, labels = texts_and_labels(n, template)
    if mode == "infer":
        predict_texts(model, tok, texts[:batch], MAX_LENGTH, batch)  # warm-up
        t0 = time.perf_counter()
        predict_texts(model, tok, texts, MAX_LENGTH, batch)
        seconds = time.perf_counter() - t0
    else:
        ds = EncodedEvents(tok, texts, labels, MAX_LENGTH)
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                     learning_rate=2e-4, save_strategy="no", eval_strategy="no", report_to="none",
                                     use_cpu=True, disable_tqdm=True, logging_strategy="no",
                                     dataloader_num_workers=0, seed=0)
            trainer = FocalTrainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
                                   focal=FocalLoss(gamma=0.5))
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
    return {"template": template, "mode": mode, "events": n, "seconds": round(seconds, 1),
            "events_per_s": round(n / seconds, 2), "qwen_tokens_per_event": round(count_tokens(tok, texts), 2),
            "peak_rss_mb": round(peak_rss_mb()), "batch_size": batch, "steps": steps if mode == "train" else None,
            "precision": precision, "weights_dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def _case(standin: Path, template: str, mode: str, steps: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", str(standin), template, mode, str(steps), str(batch)],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"case {template} {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--standin", type=Path, help="an existing 0.5b stand-in directory (default: build one)")
    p.add_argument("--steps", type=int, default=24, help="LoRA optimizer steps per template")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--infer-events", type=int, default=256)
    p.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        standin, template, mode, steps, batch = args.case
        print(json.dumps(run_case(standin, template, mode, int(steps), int(batch))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qwen-") as tmp:
        standin = args.standin
        if standin is None:
            from demo_kit.qwen_standin import build_standin

            standin = build_standin(Path(tmp) / "qwen2.5-0.5b-standin", "0.5b", seed=0)
        for template in TEMPLATES:
            for mode, steps in (("train", args.steps), ("infer", args.infer_events // args.batch)):
                if mode not in args.modes:
                    continue
                row = _case(standin, template, mode, steps, args.batch)
                rows.append(row)
                print(f"{template:9s} {mode:5s} {row['events_per_s']:7.2f} events/s  peak RSS {row['peak_rss_mb']:6d} MB"
                      f"  ({row['qwen_tokens_per_event']} Qwen tokens/event, {row['events']} events, "
                      f"batch {row['batch_size']}, {row['seconds']} s)", flush=True)
    speedup = {mode: round(next(r["events_per_s"] for r in rows if r["template"] == "qwen-v1" and r["mode"] == mode)
                           / next(r["events_per_s"] for r in rows if r["template"] == "words-v1" and r["mode"] == mode), 2)
               for mode in args.modes}
    print("qwen-v1 / words-v1 events/s: " + ", ".join(f"{mode} {x}x" for mode, x in speedup.items()))
    from processor.io import write_json_atomic

    write_json_atomic(args.out, {
        "date": time.strftime("%Y-%m-%d"), "model": "Qwen2.5-0.5B stand-in (demo_kit.qwen_standin --size 0.5b: "
        "Qwen2.5-0.5B's config, Qwen's vocabulary, random weights in bf16)",
        "machine": {"cpus": os.cpu_count(), "note": "2 cores shared with other jobs while measured: rough figures"},
        "lora": LORA, "max_length": MAX_LENGTH, "results": rows, "speedup_qwen_v1_over_words_v1": speedup})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
