"""The LoRA adapter merged into the base at load (peft ``merge_and_unload``) ships the probabilities
of the unmerged model: within MERGE_ATOL, which is float32 rounding of the folded weights.

tiny_package's adapter is fresh (LoRA B = 0, a no-op to merge), so this one is given random B
matrices large enough to move every probability, and packed with tiny_package's serving spec.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# Merged minus unmerged, per shipped probability. Folding B @ A * scale into W changes the order of
# float32 sums only: observed 1e-6 here (this head's logits are scaled x40) and 2e-7 on the demo model;
# 1e-5 leaves room for other thread counts without hiding a wrong merge (differences ~1e-1).
MERGE_ATOL = 1e-5


@pytest.fixture(scope="module")
def lora_package(tiny_package, tmp_path_factory):
    from processor.model import apply_lora, load_for_classification, resolve_model
    from processor.package import write_package
    from processor.schema import LABELS

    base, tokenizer = load_for_classification(resolve_model(str(tiny_package.base_dir)), labels=LABELS)
    torch.manual_seed(7)
    model = apply_lora(base, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
            elif "modules_to_save" in name and ".score." in f".{name}":
                p.mul_(40.0)
    return write_package(tmp_path_factory.mktemp("lora-package") / "model_final.zip", model=model,
                         tokenizer=tokenizer, serving=tiny_package.serving, metrics={"val_macro_f1": 0.0})


def test_the_merged_model_ships_the_unmerged_probabilities(tiny_package, lora_package):
    from peft import PeftModel

    from processor.package import load_packaged_model

    merged = load_packaged_model(lora_package)
    unmerged = load_packaged_model(lora_package, merge=False)
    without_adapter = load_packaged_model(tiny_package.zip_path, merge=False)
    try:
        assert isinstance(unmerged.model, PeftModel) and not isinstance(merged.model, PeftModel)
        assert not any("lora" in name for name, _ in merged.model.named_parameters())
        events = tiny_package.events
        p_merged, p_unmerged = merged.predict_proba(events), unmerged.predict_proba(events)
        # The adapter matters (else merging could not go wrong), and merging keeps what it does.
        assert np.abs(p_unmerged - without_adapter.predict_proba(events)).max() > 0.1
        np.testing.assert_allclose(p_merged, p_unmerged, atol=MERGE_ATOL, rtol=0)
        assert [r["label"] for r in merged.predict(events)] == [r["label"] for r in unmerged.predict(events)]
    finally:
        for m in (merged, unmerged, without_adapter):
            m.close()


def test_loading_sets_torch_s_threads(tiny_package, monkeypatch):
    from processor.package import THREADS_ENV, PackageError, load_packaged_model

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(THREADS_ENV, "1")
        load_packaged_model(tiny_package.zip_path).close()
        assert torch.get_num_threads() == 1
        load_packaged_model(tiny_package.zip_path, threads=2).close()
        assert torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "two")
        with pytest.raises(PackageError, match=f"{THREADS_ENV}='two'"):
            load_packaged_model(tiny_package.zip_path)
    finally:
        torch.set_num_threads(before)
