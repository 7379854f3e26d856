"""Check event files against the contract before anything is trained on them.

Usage::

    python -m processor.validate PATH [PATH ...] [--unlabeled] [--report-json FILE]
    python -m processor.validate --train TRAIN --val VAL [--fail-on-leakage] [--report-json FILE]

Exit codes: 0 all files meet the contract, 1 the data break it (every problem is listed on stderr),
2 usage error (missing or unreadable path, bad flags). With several paths, ids must also be disjoint
across files (train vs val). ``--report-json`` writes ``{"valid", "labeled", "contract_fingerprint",
"files", "problems", "leakage"}`` atomically, whether or not the data are valid.

``--train``/``--val`` check a split: the contract and disjoint ids as above, plus temporal leakage
(:mod:`processor.leakage`: per symbol, val events must be later than the latest train event). An
overlap is a WARNING on stderr and exit 0, unless ``--fail-on-leakage`` (then exit 1). Events without
timestamps cannot be checked: that is said, and is not a failure. ``leakage`` in the report is
:meth:`processor.leakage.LeakageReport.to_dict` (null without ``--train``/``--val`` or when the files
break the contract).

A split that meets the contract but cannot train a 3-class classifier (a class absent from train, or a
class with fewer events than ``--calibration-folds`` in train or val; :mod:`processor.trainable`) is a
WARNING on stderr, exit 0: training refuses it (exit 1) before loading a model. ``trainable`` in the
report is ``{"ok", "calibration_folds", "problems"}`` (null where ``leakage`` is).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from processor.io import sha256_file, write_json_atomic
from processor.cli import run
from processor.config import TrustConfig
from processor.contract_check import Problem
from processor.data import Inspection, PathLike, UsageError, inspect_events
from processor.leakage import LeakageReport, time_overlap
from processor.schema import LABELS, schema_fingerprint
from processor.trainable import check_trainable

DEFAULT_CALIBRATION_FOLDS = TrustConfig().calibration_folds

__all__ = ["main", "validate_paths"]


def validate_paths(paths: Iterable[PathLike], labeled: bool = True) -> list[Problem]:
    """Every contract problem of ``paths`` (each file, then ids across files); empty when all valid.

    Raises :class:`processor.data.UsageError` when a path is missing, a directory or unreadable.
    """
    return inspect_events(paths, labeled=labeled).problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m processor.validate",
        description="Validate event JSONL files against the event contract (events.md).",
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="JSONL file(s) to check")
    split = parser.add_argument_group(
        "train/val split", "check a split instead of PATHs: the contract and disjoint ids, plus temporal "
        "leakage -- per symbol, every val event must be later than the latest train event (times in UTC; "
        "events without a symbol form one group). An overlap is a WARNING (exit 0) unless --fail-on-leakage.")
    split.add_argument("--train", type=Path, metavar="FILE", help="training JSONL file")
    split.add_argument("--val", type=Path, metavar="FILE", help="validation JSONL file")
    split.add_argument("--fail-on-leakage", action="store_true",
                       help="exit 1 when val events overlap train events in time (events without "
                            "timestamps cannot be checked and do not fail)")
    split.add_argument("--calibration-folds", type=int, default=DEFAULT_CALIBRATION_FOLDS, metavar="N",
                       help="warn when a class has fewer than N events in train or val, or none in train "
                            f"(the run's trust.calibration_folds; default {DEFAULT_CALIBRATION_FOLDS})")
    parser.add_argument("--unlabeled", action="store_true",
                        help="prediction input: 'label' is not required (if present it must still be valid)")
    parser.add_argument("--report-json", type=Path, metavar="FILE",
                        help="also write the result as JSON to FILE (written atomically, valid or not)")
    return parser


def _file_entries(paths: Sequence[Path], result: Inspection, labeled: bool) -> list[dict[str, Any]]:
    entries = []
    for path in paths:
        file = str(path)
        frame = result.frames.get(file)
        entry: dict[str, Any] = {
            "path": file,
            "sha256": sha256_file(path),
            "records": 0 if frame is None else len(frame),
            "problems": sum(p.file == file for p in result.problems),
        }
        # A file with problems holds placeholders in place of bad cells: its counts would mislead.
        if labeled and frame is not None and "label" in frame and not entry["problems"]:
            counts = frame["label"].value_counts()
            entry["class_counts"] = {name: int(counts.get(name, 0)) for name in LABELS}
        entries.append(entry)
    return entries


def _summary(entry: dict[str, Any]) -> str:
    text = f"{entry['path']}: {entry['records']} records"
    if "class_counts" in entry:
        text += " (" + ", ".join(f"{k} {v}" for k, v in entry["class_counts"].items()) + ")"
    else:
        text += " (unlabeled)"
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 valid, 1 contract broken, 2 usage error)."""
    args = _parser().parse_args(argv)  # argparse exits 2 on usage errors
    return run(lambda: _validate(args))


def _paths(args: argparse.Namespace) -> list[Path]:
    """The files to check, once the flags are known to go together (else UsageError)."""
    split = args.train is not None or args.val is not None
    if split and (args.train is None or args.val is None or args.paths):
        raise UsageError("--train and --val go together, without PATHs (usage: python -m processor.validate "
                         "--train TRAIN --val VAL)")
    if not split and not args.paths:
        raise UsageError("nothing to check: give PATH(s), or --train FILE --val FILE")
    if args.fail_on_leakage and not split:
        raise UsageError("--fail-on-leakage needs --train and --val")
    if args.calibration_folds < 2:
        raise UsageError(f"--calibration-folds must be >= 2, got {args.calibration_folds}")
    report_path: Path | None = args.report_json
    if report_path is not None and (report_path.is_dir() or not report_path.parent.is_dir()):
        raise UsageError(f"--report-json {report_path}: not a writable file path "
                         "(a directory, or its folder does not exist)")
    return [args.train, args.val] if split else args.paths


def _validate(args: argparse.Namespace) -> int:
    paths = _paths(args)
    split = args.train is not None
    labeled = not args.unlabeled
    report_path: Path | None = args.report_json
    result = inspect_events(paths, labeled=labeled)
    files = _file_entries(paths, result, labeled)
    # Frames of files with problems hold placeholders: their times would mislead.
    leakage: LeakageReport | None = None
    untrainable: list[str] | None = None
    if split and result.valid:
        train, val = result.frames[str(args.train)], result.frames[str(args.val)]
        leakage = time_overlap(train, val)
        untrainable = check_trainable(train, val, args.calibration_folds, names=(args.train.name, args.val.name))

    if report_path is not None:
        payload = {
            "valid": result.valid,
            "labeled": labeled,
            "contract_fingerprint": schema_fingerprint(),
            "files": files,
            "problems": [p.to_dict() for p in result.problems],
            "leakage": None if leakage is None else leakage.to_dict(),
            "trainable": None if untrainable is None else {
                "ok": not untrainable, "calibration_folds": args.calibration_folds, "problems": untrainable},
        }
        try:
            write_json_atomic(report_path, payload)
        except OSError as exc:
            raise UsageError(f"cannot write --report-json {report_path}: {exc.strerror or exc}") from None

    if result.valid:
        for entry in files:
            print(_summary(entry))
        if len(files) > 1:
            print(f"ids are disjoint across {len(files)} files")
        if leakage is None:
            return 0
        if untrainable:
            print(f"WARNING: the split cannot train a 3-class classifier (training would stop): "
                  f"{'; '.join(untrainable)}", file=sys.stderr)
        for line in leakage.lines():
            print(f"  {line}")
        if leakage.leakage_risk:
            print(f"{'LEAKAGE' if args.fail_on_leakage else 'WARNING'}: {leakage.summary()}", file=sys.stderr)
            return 1 if args.fail_on_leakage else 0
        print(leakage.summary())
        return 0

    n = len(result.problems)
    bad_files = sum(1 for e in files if e["problems"])
    print(f"INVALID: {n} problem{'s' if n != 1 else ''} in {bad_files} of {len(files)} "
          f"file{'s' if len(files) != 1 else ''} (the data do not meet the event contract)", file=sys.stderr)
    for problem in result.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
