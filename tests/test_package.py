"""verify_package on small hand-made packages (no model): what it must reject, each on its own."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from processor.io import sha256_bytes
from processor.package import MANIFEST, PackageError, verify_package

MEMBERS = {"serving.json": b'{"format_version": 1}', "metrics.json": b'{"val_macro_f1": 0.7}',
           "adapter/adapter_model.safetensors": b"weights"}


def write_zip(path: Path, members: dict[str, bytes], listed: dict[str, bytes] | None = None) -> Path:
    """A zip holding ``members`` and a manifest of ``listed`` (default: the members) with their sha256s."""
    listed = members if listed is None else listed
    manifest = {"format_version": 1, "files": {n: sha256_bytes(d) for n, d in listed.items()}}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
        zf.writestr(MANIFEST, json.dumps(manifest))
    return path


def test_a_consistent_package_verifies(tmp_path):
    manifest = verify_package(write_zip(tmp_path / "ok.zip", MEMBERS))
    assert set(manifest["files"]) == set(MEMBERS)


def test_a_member_missing_from_the_manifest_is_rejected(tmp_path):
    extra = {**MEMBERS, "adapter/extra.bin": b"smuggled"}
    with pytest.raises(PackageError, match=r"adapter/extra\.bin: not listed in the manifest"):
        verify_package(write_zip(tmp_path / "extra.zip", extra, listed=MEMBERS))


def test_a_listed_member_missing_from_the_zip_is_rejected(tmp_path):
    fewer = {k: v for k, v in MEMBERS.items() if k != "metrics.json"}
    with pytest.raises(PackageError, match=r"metrics\.json: listed in the manifest but missing"):
        verify_package(write_zip(tmp_path / "fewer.zip", fewer, listed=MEMBERS))


@pytest.mark.parametrize("name", ["/etc/evil.txt", "adapter\\evil.txt", "C:/evil.txt", "C:evil.txt",
                                  "../evil.txt", "adapter/../../evil.txt"])
def test_unsafe_member_paths_are_rejected(tmp_path, name):
    # Listed in the manifest with the right sha256: only the path itself is wrong.
    members = {**MEMBERS, name: b"outside"}
    with pytest.raises(PackageError, match="unsafe member path") as err:
        verify_package(write_zip(tmp_path / "unsafe.zip", members))
    assert repr(name) in str(err.value)
