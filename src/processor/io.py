"""File I/O used by every step: atomic writes, sha256 digests, JSON Lines reading.

Atomic: a file is never seen half-written -- a temp file beside it, flushed to disk, then
``os.replace`` (same file system, so the rename is atomic, on Windows too)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_target(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp file beside ``path`` for the caller to write (a zip, any file a library writes by name);
    when the block ends without error it is flushed to disk, made world-readable like a normal file
    (mkstemp's 0600 would hide shared outputs) and renamed over ``path``. On error, no temp file is
    left and the old ``path`` (if any) is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # the rename must not reach the disk before the data (power loss)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_target`)."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def write_png_atomic(fig: Any, path: PathLike) -> Path:
    """A matplotlib figure as PNG, rendered in memory first so a failed render leaves no file."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return write_bytes_atomic(path, png.getvalue())


def write_text_atomic(path: PathLike, text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends on every OS."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, obj: Any, *, default: Any = None, allow_nan: bool = True) -> Path:
    """Indented UTF-8 JSON with a final newline (``allow_nan=False`` for reports other tools parse:
    NaN is not JSON)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=allow_nan, default=default)
    return write_text_atomic(path, text + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model_dir: PathLike) -> str:
    """The one digest of a checkpoint's weights: every weight file (safetensors, else bin) in name
    order, each as its name and its sha256. Recorded in the zip (``serving.json``) and the qwen-tiny
    build info, and checked when a zip is loaded."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; ``json.JSONDecodeError`` carries the line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, json.loads(line)


def read_jsonl(path: PathLike) -> list[Any]:
    """Every non-blank line of a JSON Lines file, parsed."""
    return [value for _, value in iter_jsonl(path)]
