"""Which checkpoint --resume continues from, in the fast tier (no training): the newest one whose
trainer_state.json (written last by Trainer, and not atomically) parses. test_resume.py kills real
runs for the end-to-end story (slow tier)."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerState

from processor.trainer import last_complete_checkpoint

# Out of name order on purpose: "checkpoint-5" > "checkpoint-12" as text, 12 > 5 as steps.
STEPS = (3, 12, 5)


def _checkpoints(root: Path) -> dict[int, Path]:
    """One complete checkpoint per step, its trainer_state.json written by Trainer's own code."""
    made = {}
    for step in STEPS:
        path = root / f"checkpoint-{step}"
        path.mkdir(parents=True)
        TrainerState(global_step=step, epoch=float(step)).save_to_json(str(path / "trainer_state.json"))
        made[step] = path
    (root / "checkpoint-tmp").mkdir()  # not a step number: never a candidate
    return made


def test_the_newest_complete_checkpoint_by_step_not_by_name(tmp_path):
    made = _checkpoints(tmp_path / "checkpoints")
    notes: list[str] = []
    assert last_complete_checkpoint(tmp_path / "checkpoints", say=notes.append) == str(made[12])
    assert notes == []


def test_a_truncated_trainer_state_is_skipped_with_a_note(tmp_path):
    """A kill while Trainer writes trainer_state.json leaves a prefix of it: that checkpoint is cut
    short, and the next newest one that parses is the one resumed."""
    made = _checkpoints(tmp_path / "checkpoints")
    state = made[12] / "trainer_state.json"
    text = state.read_text(encoding="utf-8")
    for cut in (text[: len(text) // 2], text[:-3], ""):
        state.write_text(cut, encoding="utf-8")
        notes: list[str] = []
        assert last_complete_checkpoint(tmp_path / "checkpoints", say=notes.append) == str(made[5]), repr(cut[-20:])
        assert len(notes) == 1 and f"skipping the incomplete checkpoint {made[12]}" in notes[0]


def test_no_complete_checkpoint_means_none(tmp_path):
    made = _checkpoints(tmp_path / "checkpoints")
    for path in made.values():
        (path / "trainer_state.json").write_text('{"global_step": ', encoding="utf-8")
    notes: list[str] = []
    assert last_complete_checkpoint(tmp_path / "checkpoints", say=notes.append) is None
    assert len(notes) == len(STEPS)
    assert last_complete_checkpoint(tmp_path / "nowhere") is None
