"""How every command-line entry point ends: exit codes and one-line error messages, in one place.

Exit codes: 0 done, 1 the data (or a check) failed, 2 usage / config / infrastructure error,
130 interrupted. A user's mistake is one ``error: ...`` message on stderr, never a stack trace; an
exception that is not a :class:`UserError` is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """A mistake the user can fix (arguments, config, a missing file or model): exit 2, or the
    ``exit_code`` given (a command whose documented code for this failure is another)."""

    exit_code = EXIT_USAGE

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class DataError(UserError):
    """The input data break the contract: exit 1."""

    exit_code = EXIT_DATA


TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
# "" is false: an MLproject parameter left empty, an unset environment variable.
FALSE_WORDS = frozenset({"false", "no", "0", "off", ""})


class BoolError(argparse.ArgumentTypeError, ValueError):
    """Not a boolean. argparse prints the message as it is; other callers catch the ValueError."""


def parse_bool(value: object) -> bool:
    """The one reading of a boolean from text (flags, config values, environment variables, MLflow
    metadata): true/yes/1/on, false/no/0/off/"" in any case; a bool passes through. Also an argparse
    ``type`` for optional-value flags (``nargs="?", const="true"``): a bare flag passes "true"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise BoolError(f"expected true or false, got {value!r}")


def first_line(exc: BaseException | str | None, limit: int = 300) -> str:
    """The first line of an exception's message (MLflow's ``.message`` when it has one), at most
    ``limit`` characters; the exception's type name when there is no message."""
    if isinstance(exc, BaseException):
        text = str(getattr(exc, "message", None) or exc).strip()
        fallback = type(exc).__name__
    else:
        text, fallback = (exc or "").strip(), "no details"
    return text.splitlines()[0][:limit] if text else fallback


def error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run(body: Callable[[], int], *, data_error: Callable[[DataError], str] | None = None,
        interrupted: str = "interrupted", quiet: bool = False,
        failure: Callable[[Exception], str] | None = None) -> int:
    """``body()``'s exit code; a :class:`UserError` becomes ``error: <message>`` and its exit code
    (``data_error`` words the message of a :class:`DataError`, e.g. what was not done). ``quiet``
    keeps the exit code but prints nothing (the other ranks of a multi-process job: rank 0 speaks).
    ``failure``, for a command that talks to servers (the gate), words any other exception as one
    line and exit 2 (a network or server failure is not a bug of this code); without it a traceback."""
    try:
        return body()
    except DataError as exc:
        return EXIT_DATA if quiet else error(data_error(exc) if data_error else str(exc), exc.exit_code)
    except UserError as exc:
        return exc.exit_code if quiet else error(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if not quiet:
            print(f"\n{interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if failure is None:
            raise
        return EXIT_USAGE if quiet else error(failure(exc), EXIT_USAGE)


def nothing_trained(exc: Any) -> str:
    """The train loop's and the sweep's message for data they refuse: a contract break (the problems
    follow, one per line), or a :class:`DataError` whose message is its own one line (``one_line``)."""
    if getattr(exc, "one_line", False):
        return f"{exc}; nothing was trained"
    return f"the data break the event contract; nothing was trained.\n{exc}"
