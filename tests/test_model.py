"""processor.model: resolving, loading Qwen checkpoints for classification, LoRA, and the qwen-tiny base.

The Qwen2/Qwen3 checkpoints here are tiny random-weight models saved with ``save_pretrained``, so the
same loading code runs as for a downloaded Qwen. ``qwen-tiny`` is built once per session (or reused
from ``$PROCESSOR_CACHE_DIR`` when CI sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3ForSequenceClassification,
)

from processor.model import (
    MODEL_ALIASES,
    PADDING_SIDE,
    ModelNotAvailableError,
    ResolvedModel,
    apply_lora,
    load_for_classification,
    resolve_model,
    trainable_parameters,
)
from demo_kit.sample_data import sample_features
from processor.schema import LABELS
from processor.names import BUILD_INFO_FILE
from processor.serialize import count_tokens, render_events
from demo_kit.tiny_base import TinyRecipe, build_qwen_tiny, build_tiny_tokenizer

# Small enough to build in seconds: for tests of the build machinery, not of model quality.
MINI_RECIPE = TinyRecipe(
    tokenizer_events=300,
    tokenizer_generic_lines=50,
    vocab_size=300,
    hidden_size=64,  # big enough that a different thread count changes the float sums
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    pretrain_events=640,
    pretrain_steps=20,
    batch_size=32,
)
UNSEEN = [
    "atr=123.456 leg=99 tokyo",
    "ext1 int-1 leg99 ws100 atr123.456 zanzibar",
    "ext=1 int=-1 choch=10 fvg=101 leg=100 first=1 pb=0 ws=1.00 atr=1.23e-05 sydney",
    "symbol=BTCUSD 2024-03-05T13:45:00+09:00 price 67,890.5",
    "Zürich 東京 🚀 tab\there\nnew line",
]
TEXTS = [  # different lengths, so batches need padding
    "ext=1 int=1 choch=10 fvg=101 leg=2 first=1 pb=1 ws=0.64 atr=0.00112 london",
    "ext=0 int=-1 asia",
    "ext=-1 int=0 choch=01 fvg=010 leg=13 first=0 pb=0 ws=0.05 atr=12.5 new_york extra words here",
]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("PROCESSOR_CACHE_DIR", "").strip()
    return Path(env) if env else tmp_path_factory.mktemp("processor-cache")


@pytest.fixture(scope="session")
def tiny_dir(tiny_cache: Path) -> Path:
    return build_qwen_tiny(tiny_cache)


@pytest.fixture(autouse=True)
def _use_tiny_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # resolve_model("qwen-tiny") reads $PROCESSOR_CACHE_DIR: point it at the session build.
    if "tiny_dir" in request.fixturenames:
        monkeypatch.setenv("PROCESSOR_CACHE_DIR", str(request.getfixturevalue("tiny_cache")))


@pytest.fixture(scope="session")
def mini_tokenizer():
    return build_tiny_tokenizer(MINI_RECIPE)


def _save_random_checkpoint(directory: Path, arch: str, tokenizer, *, drop_pad: bool = True) -> Path:
    """A tiny random-weight Qwen2/Qwen3 causal LM + tokenizer, saved like a hub checkpoint."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=arch == "qwen2",  # both layouts: tied (Qwen2.5-0.5B) and untied lm_head
    )
    torch.manual_seed(0)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if drop_pad:
        # Like some base checkpoints: no pad token in the tokenizer config.
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["pad_token"] = None
        config_path.write_text(json.dumps(config), encoding="utf-8")
    return directory


@pytest.fixture(params=["qwen2", "qwen3"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path, mini_tokenizer) -> tuple[str, Path]:
    return request.param, _save_random_checkpoint(tmp_path / request.param, request.param, mini_tokenizer)


@pytest.fixture
def offline_empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------- loading real Qwen2/Qwen3 code paths


def test_load_qwen_checkpoint_for_classification_with_lora(checkpoint: tuple[str, Path]) -> None:
    arch, directory = checkpoint
    resolved = resolve_model(str(directory))
    assert resolved == ResolvedModel(
        name=str(directory), path=directory.resolve(), base_id=str(directory.resolve()), revision=None, is_demo=False
    )
    assert AutoTokenizer.from_pretrained(directory).pad_token is None  # the pitfall is really there

    torch.manual_seed(0)
    model, tokenizer = load_for_classification(resolved, labels=LABELS)
    expected_cls = Qwen2ForSequenceClassification if arch == "qwen2" else Qwen3ForSequenceClassification
    assert isinstance(model, expected_cls)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    assert model.config.id2label == dict(enumerate(LABELS))
    assert tokenizer.padding_side == PADDING_SIDE

    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    assert isinstance(peft_model, PeftModel)
    trainable_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable_names and all("lora_" in n or ".score." in f".{n}" for n in trainable_names)
    assert any("score" in n and "modules_to_save" in n for n in trainable_names)
    # LoRA on every linear layer of the blocks, none on the head (it is trained in full instead).
    lora_targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable_names if "lora_" in n}
    assert lora_targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable, total = trainable_parameters(peft_model)
    assert 0 < trainable < total
    assert trainable == sum(p.numel() for n, p in peft_model.named_parameters() if n in trainable_names)

    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()  # really padded
    out = peft_model(**batch)
    assert out.logits.shape == (len(TEXTS), len(LABELS))
    assert torch.isfinite(out.logits).all()


@pytest.mark.slow
def test_lora_trains_and_saves_the_score_head(checkpoint: tuple[str, Path], tmp_path: Path) -> None:
    _, directory = checkpoint
    torch.manual_seed(0)
    model, tokenizer = load_for_classification(resolve_model(str(directory)), labels=LABELS)
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    head = peft_model.base_model.model.score
    before = head.modules_to_save["default"].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    loss = torch.nn.functional.cross_entropy(peft_model(**batch).logits, torch.tensor([0, 1, 2]))
    loss.backward()
    optimizer.step()
    after = head.modules_to_save["default"].weight.detach()
    assert not torch.equal(before, after)
    assert torch.equal(head.original_module.weight, before)  # the original stays as loaded

    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    score_keys = [k for k in saved if "score" in k]
    assert score_keys, sorted(saved)
    assert torch.equal(saved[score_keys[0]], after)
    assert any("lora_A" in k for k in saved)


def test_apply_lora_with_explicit_target_modules(checkpoint: tuple[str, Path]) -> None:
    _, directory = checkpoint
    model, _ = load_for_classification(resolve_model(str(directory)), labels=LABELS)
    peft_model = apply_lora(model, r=2, alpha=4, dropout=0.1, target_modules=["q_proj", "v_proj"])
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if "lora_" in n} == {"q_proj", "v_proj"}
    assert any("score" in n for n in names)


def test_score_head_init_follows_the_callers_torch_seed(checkpoint: tuple[str, Path]) -> None:
    _, directory = checkpoint
    resolved = resolve_model(str(directory))
    heads = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        heads.append(load_for_classification(resolved, labels=LABELS)[0].score.weight.detach())
    assert torch.equal(heads[0], heads[1])
    assert not torch.equal(heads[0], heads[2])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_each_example_alone(checkpoint: tuple[str, Path], side: str) -> None:
    _, directory = checkpoint
    torch.manual_seed(0)
    model, tokenizer = load_for_classification(resolve_model(str(directory)), labels=LABELS)
    model.eval()
    tokenizer.padding_side = side
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in TEXTS])
        batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
        pads = batch["attention_mask"] == 0
        assert pads[:, 0 if side == "left" else -1].any()  # padded on the side under test
        batched = model(**batch).logits
    assert not torch.allclose(alone[0], alone[1])  # examples differ, so a pooling mix-up would show
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)


def test_missing_base_weights_are_an_error(tmp_path: Path, mini_tokenizer) -> None:
    directory = _save_random_checkpoint(tmp_path / "broken", "qwen2", mini_tokenizer)
    weights = load_file(directory / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, directory / "model.safetensors")
    with pytest.raises(ModelNotAvailableError, match="lacks .* base weights"):
        load_for_classification(resolve_model(str(directory)), labels=LABELS)


def test_labels_must_be_distinct(checkpoint: tuple[str, Path]) -> None:
    with pytest.raises(ValueError, match="distinct"):
        load_for_classification(resolve_model(str(checkpoint[1])), labels=("long", "long"))


# ---------------------------------------------------------------- resolving names


def test_aliases() -> None:
    assert MODEL_ALIASES["qwen-base"] == "Qwen/Qwen2.5-0.5B"
    assert MODEL_ALIASES["qwen3-0.6b"] == "Qwen/Qwen3-0.6B"
    assert MODEL_ALIASES["qwen-tiny"] == "processor/qwen-tiny"


@pytest.mark.parametrize(
    ("name", "repo_id"),
    [
        ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"),
        ("qwen-base", "Qwen/Qwen2.5-0.5B"),
        ("qwen3-0.6b", "Qwen/Qwen3-0.6B"),
        ("nobody-xyz/no-such-model-4d1e", "nobody-xyz/no-such-model-4d1e"),
    ],
)
def test_hub_model_not_cached_offline_is_a_clear_error(offline_empty_hf_cache: Path, name: str, repo_id: str) -> None:
    with pytest.raises(ModelNotAvailableError) as excinfo:
        resolve_model(name)
    message = str(excinfo.value)
    assert repo_id in message
    assert "not in the local Hugging Face cache" in message
    assert f"huggingface-cli download {repo_id}" in message
    assert "--model qwen-tiny" in message
    assert "--model DIR" in message
    # No chained library traceback behind the message.
    error = excinfo.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_unreachable_hub_fails_fast_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Online mode, but the hub endpoint is a closed local port: the download attempt must fail cleanly.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotAvailableError, match=r"could not be downloaded \(.*Error") as excinfo:
        resolve_model("qwen-base")
    assert "--model qwen-tiny" in str(excinfo.value)


def test_hub_id_found_in_local_hf_cache(offline_empty_hf_cache: Path, mini_tokenizer) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_empty_hf_cache / "models--acme--tiny-qwen"
    snapshot = _save_random_checkpoint(repo / "snapshots" / commit, "qwen2", mini_tokenizer, drop_pad=False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")

    resolved = resolve_model("acme/tiny-qwen")
    assert resolved == ResolvedModel(
        name="acme/tiny-qwen", path=snapshot, base_id="acme/tiny-qwen", revision=commit, is_demo=False
    )
    assert resolve_model("acme/tiny-qwen", revision=commit).path == snapshot
    with pytest.raises(ModelNotAvailableError, match="acme/tiny-qwen"):
        resolve_model("acme/tiny-qwen", revision="f" * 40)
    # The snapshot directory itself, passed as a path, keeps its provenance.
    by_path = resolve_model(str(snapshot))
    assert (by_path.base_id, by_path.revision) == ("acme/tiny-qwen", commit)
    model, _ = load_for_classification(resolved, labels=LABELS)
    assert model.config.num_labels == len(LABELS)


def test_local_directory_errors(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        resolve_model(str(empty))
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(str(tmp_path / "missing" / "dir"))
    with pytest.raises(ModelNotAvailableError, match="not a directory"):
        resolve_model(str(empty / "weights.bin"))
    with pytest.raises(ModelNotAvailableError, match="No model name"):
        resolve_model("  ")


def test_count_tokens(mini_tokenizer) -> None:
    texts = ["ext=1", "ext=1 int=-1 leg=12"]
    expected = np.mean([len(mini_tokenizer(t)["input_ids"]) for t in texts])
    assert count_tokens(mini_tokenizer, texts) == pytest.approx(expected)
    assert count_tokens(mini_tokenizer, ["leg=12"]) == count_tokens(mini_tokenizer, ["leg=1"]) + 1  # digit by digit
    with pytest.raises(ValueError):
        count_tokens(mini_tokenizer, [])


# ---------------------------------------------------------------- qwen-tiny


@pytest.mark.slow
def test_qwen_tiny_resolves_and_loads_like_a_real_checkpoint(tiny_dir: Path) -> None:
    resolved = resolve_model("qwen-tiny")
    recipe_hash = TinyRecipe().recipe_hash()
    assert resolved == ResolvedModel(
        name="qwen-tiny", path=tiny_dir, base_id="processor/qwen-tiny", revision=recipe_hash, is_demo=True
    )
    assert tiny_dir.name.endswith(recipe_hash)
    assert resolve_model("qwen-tiny", revision=recipe_hash).path == tiny_dir
    with pytest.raises(ModelNotAvailableError, match="revision"):
        resolve_model("qwen-tiny", revision="0" * 16)
    # A copy of the directory is still recognised as the demo base.
    assert resolve_model(str(tiny_dir)) == replace(resolved, name=str(tiny_dir))

    config = json.loads((tiny_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert (tiny_dir / "model.safetensors").is_file()

    torch.manual_seed(0)
    model, tokenizer = load_for_classification(resolved, labels=LABELS)
    assert isinstance(model, Qwen2ForSequenceClassification)
    model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    events = sample_features(5, np.random.default_rng(0))
    batch = tokenizer(render_events(events), return_tensors="pt", padding=True)
    assert model(**batch).logits.shape == (5, len(LABELS))


@pytest.mark.slow
def test_qwen_tiny_was_really_pretrained(tiny_dir: Path) -> None:
    info = json.loads((tiny_dir / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    losses = info["lm_losses"]
    assert len(losses) >= 10
    # Well below the first logged loss and below a uniform guess over the vocabulary.
    assert info["lm_loss_final"] == losses[-1] < 0.5 * losses[0]
    assert losses[-1] < np.log(info["vocab_size"]) / 4
    # Next-token prediction on fresh events: the pretrained base beats a random init of the same shape.
    model = Qwen2ForCausalLM.from_pretrained(tiny_dir).eval()
    torch.manual_seed(0)
    random_model = Qwen2ForCausalLM(model.config).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    texts = [t + tokenizer.eos_token for t in render_events(sample_features(32, np.random.default_rng(99)))]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        trained_loss = model(**batch, labels=labels).loss.item()
        random_loss = random_model(**batch, labels=labels).loss.item()
    assert trained_loss < 0.5 * random_loss


@pytest.mark.slow
def test_qwen_tiny_model_card(tiny_dir: Path) -> None:
    card = (tiny_dir / "README.md").read_text(encoding="utf-8")
    info = json.loads((tiny_dir / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    assert "NOT Qwen's weights" in card
    assert "Qwen2 architecture" in card
    assert info["recipe_hash"] in card
    assert f"{info['lm_loss_final']:.4f}" in card
    assert f"{info['recipe']['pretrain_events']:,}" in card
    assert f"{info['recipe']['pretrain_steps']} steps" in card


@pytest.mark.slow
def test_qwen_tiny_tokenizer_round_trips_unseen_text(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    vocab = tokenizer.get_vocab()
    assert "zanzibar" not in vocab and "Ġzanzibar" not in vocab  # really unseen as a word
    for text in UNSEEN:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.eos_token_id not in ids  # nothing mapped to the unk/eos token
        assert tokenizer.decode(ids) == text
    # Digits are single tokens, like Qwen: an unseen number costs one token per character.
    assert tokenizer.tokenize("99") == ["9", "9"]
    assert count_tokens(tokenizer, ["leg=123456"]) == count_tokens(tokenizer, ["leg=1"]) + 5


@pytest.mark.slow
def test_qwen_tiny_tokenizer_is_deterministic(tiny_dir: Path) -> None:
    saved = AutoTokenizer.from_pretrained(tiny_dir)
    rebuilt = build_tiny_tokenizer(TinyRecipe())
    assert rebuilt.get_vocab() == saved.get_vocab()
    text = " ".join(render_events(sample_features(20, np.random.default_rng(5))))
    assert rebuilt(text)["input_ids"] == saved(text)["input_ids"]


@pytest.mark.slow
def test_build_is_deterministic_cached_and_keeps_the_callers_state(tmp_path: Path) -> None:
    caller_threads = torch.get_num_threads()
    try:
        torch.manual_seed(7)
        np.random.seed(7)
        expected_torch, expected_np = torch.rand(3), np.random.rand(3)
        torch.manual_seed(7)
        np.random.seed(7)
        torch.set_num_threads(1)
        first = build_qwen_tiny(tmp_path / "a", recipe=MINI_RECIPE)
        # The build reseeds and sets its own thread count; the caller's state is as before.
        assert torch.equal(torch.rand(3), expected_torch)
        assert np.array_equal(np.random.rand(3), expected_np)
        assert torch.get_num_threads() == 1

        torch.set_num_threads(3)  # a machine with more cores must still rebuild the same weights
        second = build_qwen_tiny(tmp_path / "b", recipe=MINI_RECIPE)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(caller_threads)
    assert first.name == second.name == f"qwen-tiny-{MINI_RECIPE.recipe_hash()}"
    info_a = json.loads((first / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    info_b = json.loads((second / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    assert info_a["weights_sha256"] == info_b["weights_sha256"]
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()

    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert build_qwen_tiny(tmp_path / "a", recipe=MINI_RECIPE) == first  # cached: not rebuilt
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]  # no staging left

    other_seed = replace(MINI_RECIPE, seed=MINI_RECIPE.seed + 1)
    assert other_seed.recipe_hash() != MINI_RECIPE.recipe_hash()
    third = build_qwen_tiny(tmp_path / "a", recipe=other_seed)
    assert third != first
    assert json.loads((third / BUILD_INFO_FILE).read_text(encoding="utf-8"))["weights_sha256"] != info_a["weights_sha256"]


@pytest.mark.slow
def test_concurrent_builds_share_one_result(tmp_path: Path) -> None:
    # Two processes ask for the same build at once (parallel Optuna workers, pytest-xdist): one builds
    # under the lock, the other waits and reuses it; no half-written or duplicate directory remains.
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from demo_kit.tiny_base import TinyRecipe, build_qwen_tiny
        recipe = TinyRecipe(**json.loads(sys.argv[2]))
        print(build_qwen_tiny(Path(sys.argv[1]), recipe=recipe))
        """
    )
    fields = json.dumps({k: v for k, v in asdict(MINI_RECIPE).items() if k != "versions"})
    cache = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cache), fields],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    expected = cache / f"qwen-tiny-{MINI_RECIPE.recipe_hash()}"
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {str(expected)}
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [expected.name]
    assert (expected / BUILD_INFO_FILE).is_file()
