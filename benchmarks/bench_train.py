"""Training and inference throughput (events/s) and peak memory, through the project's own code path.

    python benchmarks/bench_train.py                 # qwen-tiny and the Qwen2.5-0.5B architecture
    python benchmarks/bench_train.py --only tiny     # just the demo base

For each model it runs, in a fresh subprocess each (so peak RSS is per case):
  focal  -- the train loop's FocalTrainer (focal loss, LoRA, score head), a few optimizer steps
  plain  -- a stock transformers Trainer with the model's own cross-entropy, same model, same steps
  infer  -- batched prediction (package.predict_texts), no gradients
The 0.5B case is the real Qwen2.5-0.5B *architecture* with random weights (no hub here), saved with
save_pretrained and loaded back through resolve_model/load_for_classification like a checkpoint.
Results are printed and written to benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "train.json"

# Qwen2.5-0.5B's published architecture (config.json of Qwen/Qwen2.5-0.5B).
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                  tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6)


def make_05b(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from processor.model import resolve_model

    torch.manual_seed(0)
    config = Qwen2Config(**QWEN25_05B)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    # The real Qwen tokenizer is on the hub; the tiny one stands in (token ids < its vocab size).
    AutoTokenizer.from_pretrained(resolve_model("qwen-tiny").path).save_pretrained(directory)
    return directory


def events(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    import numpy as np

    from demo_kit.rules import label_event
    from demo_kit.sample_data import sample_features
    from processor.schema import LABEL2ID
    from processor.serialize import render_events

    feats = sample_features(n, np.random.default_rng(seed))
    return render_events(feats), [LABEL2ID[label_event(f)] for f in feats]


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a case would inherit the parent's peak (the parent builds the 0.5B checkpoint)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(model_name: str, mode: str, steps: int, batch: int, max_length: int) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from processor.encode import EncodedEvents
    from processor.loss import FocalLoss
    from processor.model import apply_lora, load_for_classification, resolve_model
    from processor.serialize import count_tokens
    from processor.package import predict_texts
    from processor.schema import LABELS
    from processor.trainer import FocalTrainer

    set_seed(0)
    resolved = resolve_model(model_name)
    base, tok = load_for_classification(resolved, labels=LABELS)
    model = apply_lora(base, r=16, alpha=32, dropout=0.05)
    n = steps * batch
    texts, labels = events(max(n, 256))
    tokens = count_tokens(tok, texts)
    if mode == "infer":
        predict_texts(model, tok, texts[:batch], max_length, batch)  # warm-up
        t0 = time.perf_counter()
        predict_texts(model, tok, texts[:n], max_length, batch)
        seconds = time.perf_counter() - t0
    else:
        ds = EncodedEvents(tok, texts[:n], [LABELS[i] for i in labels[:n]], max_length)
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                     learning_rate=1e-4, save_strategy="no", eval_strategy="no",
                                     report_to="none", use_cpu=True, disable_tqdm=True, logging_strategy="no",
                                     dataloader_num_workers=0, seed=0)
            kwargs = dict(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
            trainer = (FocalTrainer(**kwargs, focal=FocalLoss(gamma=1.5)) if mode == "focal" else Trainer(**kwargs))
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
    peak_mb = peak_rss_mb()
    return {"model": model_name, "mode": mode, "events": n, "seconds": round(seconds, 2),
            "events_per_s": round(n / seconds, 2), "tokens_per_event": round(tokens, 1),
            "peak_rss_mb": round(peak_mb), "batch_size": batch, "torch_threads": torch.get_num_threads()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["tiny", "0.5b"], default=None)
    p.add_argument("--case", nargs=5, metavar=("MODEL", "MODE", "STEPS", "BATCH", "MAXLEN"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        model, mode, steps, batch, max_length = args.case
        print(json.dumps(run_case(model, mode, int(steps), int(batch), int(max_length))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = []
        if args.only in (None, "tiny"):
            plan += [("qwen-tiny", mode, 20, 32) for mode in ("focal", "plain", "infer")]
        if args.only in (None, "0.5b"):
            big = make_05b(Path(tmp) / "qwen2.5-0.5b-arch-random")
            plan += [(str(big), mode, 4, 8) for mode in ("focal", "plain", "infer")]
        for model, mode, steps, batch in plan:
            out = subprocess.run([sys.executable, __file__, "--case", model, mode, str(steps), str(batch), "48"],
                                 capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["model"] = "qwen2.5-0.5b-arch (random init)" if model != "qwen-tiny" else model
            rows.append(row)
            print(f"{row['model']:34s} {row['mode']:6s} {row['events_per_s']:9.1f} events/s  "
                  f"peak RSS {row['peak_rss_mb']:6d} MB  ({row['tokens_per_event']} tokens/event, batch {row['batch_size']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
