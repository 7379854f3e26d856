"""The Optuna dashboard on a sweep's study, from the storage ``tune`` used (optional extra ``dashboard``).

    python -m processor.tune.dashboard                              # default study, default sqlite file
    python -m processor.tune.dashboard --study-name v3-sweep --storage postgresql://user@db/optuna
    python -m processor.tune.dashboard --output-dir outputs/sweeps/mine --port 8081

``--study-name``, ``--storage`` and ``--output-dir`` mean what they mean to ``python -m processor.tune``
and resolve to the same storage URL (processor.tune.storage): given the same three values, the
dashboard opens the study the sweep writes, while it runs. Serves until Ctrl-C.

Exit codes: 0 stopped (Ctrl-C), 1 the storage holds no such study, 2 usage error (a bad URL, no
sqlite file there, optuna-dashboard not installed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from processor.cli import DataError, first_line, run
from processor.tune.space import DEFAULT_STUDY, SweepError
from processor.tune.storage import redact, storage_url, sweep_output_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.tune.dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--study-name", default=DEFAULT_STUDY, help=f"as given to tune (default {DEFAULT_STUDY})")
    p.add_argument("--storage", default="",
                   help="as given to tune (default: sqlite:///<output-dir>/optuna.db)")
    p.add_argument("--output-dir", default=None,
                   help="as given to tune (default outputs/sweeps/<study-name>); locates the default sqlite file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="default 8080")
    return p


def open_study_storage(study_name: str, storage: str,
                       output_dir: str | None) -> tuple[optuna.storages.RDBStorage, int]:
    """The storage tune would use, opened, and the study's id in it; SweepError / DataError when there is
    nothing to show (a missing sqlite file would otherwise be created empty)."""
    from sqlalchemy.engine import make_url

    url = storage_url(storage, sweep_output_dir(study_name, output_dir))
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).is_file():
            raise SweepError(f"no sweep storage at {parsed.database}: run `python -m processor.tune` first, "
                             "or give the --storage / --output-dir / --study-name it was run with")
    try:
        opened = optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and the driver's errors alike
        raise SweepError(f"cannot open the Optuna storage {redact(url)}: {first_line(exc)}") from None
    try:
        return opened, opened.get_study_id_from_name(study_name)
    except KeyError:
        names = sorted(s.study_name for s in opened.get_all_studies())
        raise DataError(f"{redact(url)} holds no study {study_name!r} (studies: {names or 'none'})") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            from optuna_dashboard import run_server
        except ImportError:
            raise SweepError("optuna-dashboard is not installed: pip install -e '.[dashboard]'") from None
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage, study_id = open_study_storage(args.study_name, args.storage, args.output_dir)
        print(f"study {args.study_name!r} in {redact(storage.url)}: "
              f"http://{args.host}:{args.port}/dashboard/studies/{study_id} (Ctrl-C stops)", flush=True)
        run_server(storage, host=args.host, port=args.port)
        return 0

    return run(body, interrupted="dashboard stopped")


if __name__ == "__main__":
    sys.exit(main())
