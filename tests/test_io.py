"""processor.io: atomic writes, sha256 digests, JSON Lines."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from processor.io import atomic_target, read_jsonl, sha256_file, weights_sha256, write_bytes_atomic, write_text_atomic


def test_sha256_file_reads_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 2**20 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_weights_sha256_names_and_digests_every_weight_file(tmp_path: Path) -> None:
    (tmp_path / "model-00002.safetensors").write_bytes(b"two")
    (tmp_path / "model-00001.safetensors").write_bytes(b"one")
    (tmp_path / "config.json").write_text("{}")  # not a weight file
    want = hashlib.sha256()
    for name, data in (("model-00001.safetensors", b"one"), ("model-00002.safetensors", b"two")):
        want.update(name.encode())
        want.update(hashlib.sha256(data).hexdigest().encode())
    assert weights_sha256(tmp_path) == want.hexdigest()
    # A renamed shard is a different checkpoint layout: the digest changes.
    (tmp_path / "model-00002.safetensors").rename(tmp_path / "model-00003.safetensors")
    assert weights_sha256(tmp_path) != want.hexdigest()


def test_atomic_write_replaces_whole_and_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    write_text_atomic(path, "first\n")
    write_text_atomic(path, "second\n")
    assert path.read_bytes() == b"second\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temp file left
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    with pytest.raises(TypeError):  # the write into the temp file fails
        write_bytes_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_target_lets_a_library_write_by_name(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "out.zip"
    with atomic_target(path, suffix=".zip") as tmp:
        assert tmp.parent == tmp_path and not path.exists()
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr("a.txt", "x")
    assert zipfile.ZipFile(path).read("a.txt") == b"x"
    with pytest.raises(RuntimeError):
        with atomic_target(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert zipfile.ZipFile(path).read("a.txt") == b"x"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


def test_read_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(path)
