"""Optuna storage (sqlite or PostgreSQL) and the lock under which a worker counts the study's trials
and creates the next one (so racing workers cannot overshoot --n-trials)."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from processor.cli import first_line
from processor.tune.space import NOT_COUNTED_ATTR, SweepError


def default_storage(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir.resolve() / 'optuna.db').as_posix()}"


def sweep_output_dir(study_name: str, output_dir: str | None) -> Path:
    """``--output-dir``, else ``outputs/sweeps/<study name, made file-safe>``."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name.strip())
    return Path(output_dir or Path("outputs") / "sweeps" / safe_name)


def storage_url(storage: str, output_dir: Path) -> str:
    """``--storage``, else (empty) the sqlite file in the sweep's output directory; checked and with
    the installed PostgreSQL driver (:func:`normalize_url`). What tune and its dashboard both open."""
    return normalize_url(storage.strip() or default_storage(output_dir))


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return re.sub(r"//[^@/]*@", "//***@", url)


def normalize_url(url: str) -> str:
    """Check the storage URL; a bare ``postgresql://`` gets the installed driver (SQLAlchemy 2.1 defaults
    to psycopg 3, this project ships psycopg2)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise SweepError(f"--storage {url!r}: not a database URL (e.g. sqlite:///optuna.db, "
                         "postgresql://user@host/db)") from None
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def open_storage(url: str, *, heartbeat: int, grace: int | None, max_retry: int) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers sharing one file wait instead of failing
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees "already exists" and succeeds on the next try.
                last = exc
                time.sleep(0.5 + attempt)
            except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
                raise SweepError(f"cannot open the Optuna storage {redact(url)}: {first_line(exc)}") from None
    raise SweepError(f"cannot open the Optuna storage {redact(url)}: {first_line(last)}")


class TrialLock:
    """Serialises "count the study's trials, then create one" across workers. ``release`` is
    idempotent: the objective releases it as soon as its trial exists in the storage."""

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None], close: Callable[[], None]):
        self._acquire, self._release, self._close = acquire, release, close
        self._held = False

    def acquire(self) -> None:
        self._acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._release()

    def close(self) -> None:
        self.release()
        self._close()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def make_lock(url: str, study_name: str) -> TrialLock:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        import sqlalchemy

        # A session-level advisory lock on a dedicated connection: a killed worker's lock dies with it.
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        key = zlib.crc32(f"processor.tune:{study_name}".encode())
        return TrialLock(lambda: conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key}),
                         lambda: conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key}),
                         lambda: (conn.close(), engine.dispose()))
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        from filelock import FileLock

        lock = FileLock(str(Path(parsed.database).with_name(Path(parsed.database).name + ".lock")))
        return TrialLock(lock.acquire, lock.release, lambda: None)
    if backend != "sqlite":
        print(f"note: no cross-process lock for {backend} storage; with several workers the study may "
              "end with a few more than --n-trials trials", file=sys.stderr)
    mutex = threading.Lock()
    return TrialLock(mutex.acquire, mutex.release, lambda: None)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of stale trials that Optuna's retry callback re-queued under a new number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up the study's --n-trials budget: everything except failures that were
    retried, interrupted (Ctrl-C) or stopped the sweep (bad data...)."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.state != TrialState.FAIL
            or (t.number not in retried and not t.user_attrs.get(NOT_COUNTED_ATTR))]
