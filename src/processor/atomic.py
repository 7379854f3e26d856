"""Write a file so that it is never seen half-written: temp file beside it, then ``os.replace``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Create parent directories, write ``data`` to a temp file in the same directory (same file
    system, so the rename is atomic), make it world-readable like a normal file (mkstemp's 0600
    would hide shared outputs), then rename it over ``path``. A failure leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends on every OS."""
    return write_bytes_atomic(path, text.encode("utf-8"))
