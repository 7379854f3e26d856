"""Training throughput of 1 process vs 2 processes (torchrun, gloo, DDP) on this machine's CPU.

    python benchmarks/bench_ddp.py                 # qwen-tiny and the Qwen2.5-0.5B architecture
    python benchmarks/bench_ddp.py --only tiny

Each case is a real `torchrun --nproc_per_node N` job running the train loop's FocalTrainer (focal
loss, LoRA r=16, score head) for a few optimizer steps on the same per-device batch, so 2 processes
take a global batch twice as large (what `torchrun ... -m processor.train_loop` does). Threads are
split three ways: one process with all the cores, one process with one core, two processes with
half the cores each. The first step
(process-group setup, DDP's first broadcast, warm-up) is not timed. events/s counts every
process's events. The 0.5B case is the Qwen2.5-0.5B *architecture* with random weights (built as in
bench_train.py; no hub here). Results are printed and written to benchmarks/results/ddp.json.
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ddp.json"
sys.path.insert(0, str(HERE))
CORES = os.cpu_count() or 1
# (processes, threads per process): all cores in one process, one core in one process (what each
# DDP rank gets), and one process per core.
LAYOUTS = ((1, CORES), (1, 1), (2, max(1, CORES // 2)))


def run_case(model_name: str, steps: int, batch: int, max_length: int, threads: int) -> dict | None:
    """One rank of the job; rank 0 returns the figures."""
    import torch
    from transformers import DataCollatorWithPadding, TrainerCallback, TrainingArguments, set_seed

    from bench_train import events
    from processor import distributed
    from processor.encode import EncodedEvents
    from processor.loss import FocalLoss
    from processor.model import apply_lora, load_for_classification, resolve_model
    from processor.schema import LABELS
    from processor.trainer import FocalTrainer

    torch.set_num_threads(threads)
    set_seed(0)
    with distributed.single_process():
        resolved = resolve_model(model_name)
    base, tok = load_for_classification(resolved, labels=LABELS)
    model = apply_lora(base, r=16, alpha=32, dropout=0.05)
    world = distributed.world_size()
    n = steps * batch * world
    texts, labels = events(max(n, 256))
    ds = EncodedEvents(tok, texts[:n], [LABELS[i] for i in labels[:n]], max_length)

    class Clock(TrainerCallback):
        marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=1e-4, save_strategy="no", eval_strategy="no", report_to="none",
                                 use_cpu=True, disable_tqdm=True, logging_strategy="no", dataloader_num_workers=0,
                                 ddp_find_unused_parameters=False, seed=0)
        trainer = FocalTrainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
                               focal=FocalLoss(gamma=1.5), callbacks=[clock])
        trainer.train()
    distributed.end()
    if not distributed.is_main_process():
        return None
    timed_steps = len(clock.marks) - 1
    seconds = clock.marks[-1] - clock.marks[0]
    events_timed = timed_steps * batch * world
    return {"model": model_name, "processes": world, "threads_per_process": threads,
            "per_device_batch": batch, "global_batch": batch * world, "timed_steps": timed_steps,
            "seconds": round(seconds, 2), "events_per_s": round(events_timed / seconds, 2)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_case(model: str, processes: int, threads: int, steps: int, batch: int, max_length: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(Path(__file__).resolve()),
           "--case", model, str(steps), str(batch), str(max_length), str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"case {model} x{processes} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["tiny", "0.5b"], default=None)
    p.add_argument("--case", nargs=5, metavar=("MODEL", "STEPS", "BATCH", "MAXLEN", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        model, steps, batch, max_length, threads = args.case
        result = run_case(model, int(steps), int(batch), int(max_length), int(threads))
        if result:
            print(json.dumps(result), flush=True)
        return 0

    from bench_train import make_05b

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        if args.only in (None, "tiny"):
            cases.append(("qwen-tiny", 21, 32, 48))
        if args.only in (None, "0.5b"):
            cases.append((str(make_05b(Path(tmp) / "qwen25-05b-arch")), 4, 4, 48))
        for model, steps, batch, max_length in cases:
            for processes, threads in LAYOUTS:
                row = launch_case(model, processes, threads, steps, batch, max_length)
                row["model"] = "qwen-tiny" if model == "qwen-tiny" else "Qwen2.5-0.5B architecture (random weights)"
                rows.append(row)
                print(f"{row['model']:45s} x{processes} process(es), {row['threads_per_process']} thread(s) each, "
                      f"global batch {row['global_batch']}: {row['events_per_s']:.1f} events/s "
                      f"({row['timed_steps']} timed steps, {row['seconds']} s)", flush=True)
    for model in dict.fromkeys(r["model"] for r in rows):
        rate = {(r["processes"], r["threads_per_process"]): r["events_per_s"] for r in rows if r["model"] == model}
        print(f"{model}: 2 processes x 1 thread vs 1 process x {CORES} threads = {rate[2, 1] / rate[1, CORES]:.2f}x, "
              f"vs 1 process x 1 thread = {rate[2, 1] / rate[1, 1]:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
                                   "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
