"""Event JSONL files under the contract (../shared/contract/events.md): read, each file checked whole by
:mod:`processor.contract_check` (every problem at once, with file, line, id and key), ids disjoint across
files. :func:`load_events` and :func:`load_split` raise on bad data, :func:`inspect_events` reports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from processor.cli import UserError
from processor.contract_check import (ContractError, Problem, build_frame, check_columns, frame_schema, parse_lines,
                                      schema_problems, sort_problems)
from processor.schema import FEATURES, OPTIONAL_KEYS, meets_schema

__all__ = [
    "Inspection",
    "UsageError",
    "check_disjoint_ids",
    "inspect_events",
    "load_events",
    "load_split",
    "records",
]

PathLike = str | os.PathLike[str]


class UsageError(UserError):
    """The path itself is unusable (missing, a directory, unreadable): a usage error, not a data error."""


@dataclass
class Inspection:
    """Result of :func:`inspect_events`: a frame per file (None when no record could be read) and all
    problems. A frame of a file with problems may hold placeholder values and ``id=None`` for bad ids."""

    frames: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected a JSONL file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _split_lines(raw: bytes, file: str, problems: list[Problem]) -> list[tuple[int, str]]:
    """Non-blank lines as (1-based line number, text); undecodable lines become problems."""
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM is still UTF-8
        raw = raw[3:]
    out: list[tuple[int, str]] = []
    try:
        text_lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        text_lines = None
    if text_lines is not None:
        for no, text in enumerate(text_lines, start=1):
            if text and not text.isspace():
                out.append((no, text))
        return out
    # Slow path only for broken files: find which lines are not UTF-8.
    for no, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(file, no, None, None,
                                    f"not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at column {exc.start + 1})"))
            continue
        if text and not text.isspace():
            out.append((no, text))
    return out


# --------------------------------------------------------------------------------------------- loading


def _output_columns(labeled: bool) -> list[str]:
    return ["line", "id", *FEATURES, *(["label"] if labeled else []), *OPTIONAL_KEYS]


def _inspect_file(path: PathLike, labeled: bool) -> tuple[pd.DataFrame | None, list[Problem]]:
    p = Path(path)
    file = str(path)
    problems: list[Problem] = []
    lines = _split_lines(_read_bytes(p), file, problems)
    if not lines and not problems:
        return None, [Problem(file, None, None, None, "no records (the file is empty or holds only blank lines)")]
    recs, line_nos = parse_lines(lines, file, problems)
    if not recs:
        return None, sort_problems(problems)
    columns, ids = check_columns(recs, line_nos, file, labeled, problems)
    frame = build_frame(columns, line_nos)
    if problems or not meets_schema(frame_schema(labeled), columns):
        problems.extend(schema_problems(frame, labeled, file, ids))
    if problems:
        frame["id"] = pd.Series(ids, dtype="str")
        return frame, sort_problems(problems)
    if "label" in frame and not labeled:
        frame = frame.drop(columns="label")  # prediction never sees a label
    return frame[_output_columns(labeled)], []


def inspect_events(paths: Iterable[PathLike], *, labeled: bool = True) -> Inspection:
    """Check several files (each on its own, then ids across them) without raising on bad data.

    Raises :class:`UsageError` when a path is missing, a directory, unreadable or given twice.
    """
    result = Inspection()
    paths = list(paths)
    seen: dict[Path, PathLike] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            # The same file twice would trivially "share" every id; almost surely a typo on the CLI.
            raise UsageError(f"{path}: listed more than once (same file as {seen[resolved]})")
        seen[resolved] = path
    for path in paths:
        frame, problems = _inspect_file(path, labeled)
        result.frames[str(path)] = frame
        result.problems.extend(problems)
    loaded = {f: df for f, df in result.frames.items() if df is not None}
    if len(loaded) > 1:
        result.problems.extend(check_disjoint_ids(loaded))
    return result


def load_events(path: PathLike, *, labeled: bool = True) -> pd.DataFrame:
    """Load one JSONL file of events, validated against the contract.

    Returns a frame with columns ``line`` (1-based line number), ``id``, the 13 features in contract
    order, ``label`` (only when ``labeled``), ``timestamp`` and ``symbol`` (None where absent).
    Dtypes: flags bool; ext_dir, int_dir, mgann_leg_index int64; wave_strength, atr float64; id, session,
    label str; timestamp, symbol object.

    Raises :class:`ContractError` listing every problem of the file, :class:`UsageError` for an
    unusable path.
    """
    frame, problems = _inspect_file(path, labeled)
    if problems:
        raise ContractError(problems)
    assert frame is not None
    return frame


def check_disjoint_ids(frames_by_path: Mapping[PathLike, pd.DataFrame]) -> list[Problem]:
    """Problems for ids present in more than one file; each later occurrence names the first one."""
    first_seen: dict[str, tuple[str, int]] = {}
    problems: list[Problem] = []
    for path, frame in frames_by_path.items():
        file = str(path)
        sub = frame.loc[frame["id"].notna(), ["id", "line"]]
        clash = sub["id"].isin(first_seen.keys()).to_numpy()
        for rid, line in zip(sub["id"][clash], sub["line"][clash]):
            other_file, other_line = first_seen[rid]
            problems.append(Problem(file, int(line), rid, "id",
                                    f"id also present in {other_file}:{other_line} "
                                    "(ids must be unique across train and val)"))
        fresh = sub[~clash].drop_duplicates("id")
        first_seen.update((rid, (file, int(line))) for rid, line in zip(fresh["id"], fresh["line"]))
    return problems


def load_split(train_path: PathLike, val_path: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load labeled train and val files; raise one :class:`ContractError` with every problem of both
    files, including ids shared between them."""
    result = inspect_events([train_path, val_path], labeled=True)
    if result.problems:
        raise ContractError(result.problems)
    train, val = result.frames[str(train_path)], result.frames[str(val_path)]
    assert train is not None and val is not None
    return train, val


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Feature dicts with plain Python values (bool/int/float/str), one per row, for serialization."""
    return df[list(FEATURES)].to_dict(orient="records")
