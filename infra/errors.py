"""How the console script reports a failure: one line, a stable code, a documented exit
code (docs/errors.md). Tracebacks only with `--debug` or `EVENTCRM_DEBUG=1`."""

from __future__ import annotations

import traceback
from typing import IO, Final

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from domain.errors import (
    ConfigurationError,
    UnavailableError,
    UsageError,
    UserFacingError,
)
from infra.bootstrap import database_unavailable

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
"""A command ran and found something wrong (a difference, an unknown customer)."""
EXIT_USAGE: Final = 2
"""A bad argument or option, or a file named on the command line that cannot be used."""
EXIT_CONFIGURATION: Final = 3
"""A setting, the policy, the master key or the schema must be fixed: rerunning won't help."""
EXIT_UNAVAILABLE: Final = 4
"""The database or the broker cannot be reached: rerunning later may succeed."""
EXIT_INTERNAL: Final = 5
"""A bug: something no check anticipated. Rerun with --debug and report the traceback."""
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C (128 + SIGINT), as shells report it."""

DEBUG_HINT: Final = "rerun with --debug (or EVENTCRM_DEBUG=1) to see the traceback"


def exit_code(error: UserFacingError) -> int:
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, ConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(error, UnavailableError):
        return EXIT_UNAVAILABLE
    return EXIT_FAILURE


def user_facing(exc: BaseException) -> UserFacingError | None:
    """The user-facing reading of an exception that escaped a command, or None for a bug.

    Boundaries that know a cause raise `UserFacingError` themselves; this adds the
    failures any command can meet mid-way: a database or broker going away."""
    if isinstance(exc, UserFacingError):
        return exc
    if isinstance(exc, psycopg.OperationalError | OperationalError | InterfaceError):
        return database_unavailable(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return UsageError(
            f"cannot use the file {exc.filename}: {exc.strerror or exc}",
            code="file_error",
            hint="check the path, that its directory exists and that you may read or write it",
        )
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return UnavailableError(
            f"cannot reach the Kafka cluster: {exc}",
            code="broker_unavailable",
            hint="check EVENTCRM_KAFKA_BOOTSTRAP and that the brokers are running",
        )
    return None


def line(error: UserFacingError) -> str:
    """`eventcrm: error [code]: what is wrong; how to fix it` — one line, always."""
    text = str(error)
    return f"eventcrm: error [{error.code}]: {' '.join(text.split())}"


def report(exc: BaseException, *, debug: bool, stream: IO[str]) -> int:
    """Print ``exc`` as the user should see it; returns the exit code to end with."""
    if isinstance(exc, KeyboardInterrupt):
        stream.write("eventcrm: interrupted\n")
        return EXIT_INTERRUPTED
    if debug:
        traceback.print_exception(exc, file=stream)
    error = user_facing(exc)
    if error is None:
        reason = " ".join(str(exc).split())
        what = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        hint = "please report it" if debug else f"{DEBUG_HINT}, and please report it"
        stream.write(f"eventcrm: error [internal_error]: internal error ({what}); {hint}\n")
        return EXIT_INTERNAL
    stream.write(line(error) + "\n")
    return exit_code(error)
