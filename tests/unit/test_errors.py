"""The console script's error reporting, without a process: codes, lines, exit codes."""

from __future__ import annotations

import io
import pickle

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from kafka.errors import KafkaTimeoutError

from adapters.crypto import InvalidMasterKeyError, WrongMasterKeyError
from domain.errors import ConfigurationError, UnavailableError, UsageError, UserFacingError
from infra.errors import (
    EXIT_CONFIGURATION,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    report,
    user_facing,
)
from infra.schema import SchemaNotMigratedError


def reported(exc: BaseException, *, debug: bool = False) -> tuple[str, int]:
    stream = io.StringIO()
    code = report(exc, debug=debug, stream=stream)
    return stream.getvalue(), code


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (UsageError("m", code="file_error"), EXIT_USAGE),
        (ConfigurationError("m", code="invalid_setting"), EXIT_CONFIGURATION),
        (UnavailableError("m", code="database_unavailable"), EXIT_UNAVAILABLE),
        (SchemaNotMigratedError("no schema"), EXIT_CONFIGURATION),
        (InvalidMasterKeyError("bad"), EXIT_CONFIGURATION),
        (WrongMasterKeyError("other key", hint="h"), EXIT_CONFIGURATION),
    ],
)
def test_each_category_of_error_has_its_exit_code(error: UserFacingError, exit_code: int) -> None:
    assert reported(error)[1] == exit_code


def test_a_user_facing_error_is_one_line_with_its_code_message_and_hint() -> None:
    text, _ = reported(
        ConfigurationError("first\nsecond", code="invalid_policy", hint="fix that key")
    )
    assert text == "eventcrm: error [invalid_policy]: first second; fix that key\n"


def test_an_unexpected_exception_is_an_internal_error_without_a_traceback() -> None:
    text, code = reported(ZeroDivisionError("division by zero"))
    assert code == EXIT_INTERNAL
    assert text.startswith("eventcrm: error [internal_error]: internal error (ZeroDivisionError")
    assert "--debug" in text
    assert "Traceback" not in text
    assert text.count("\n") == 1


def test_debug_prints_the_traceback_before_the_line() -> None:
    try:
        raise ConfigurationError("broken", code="invalid_setting")
    except ConfigurationError as exc:
        text, code = reported(exc, debug=True)
    assert text.startswith("Traceback (most recent call last)")
    assert text.splitlines()[-1] == "eventcrm: error [invalid_setting]: broken"
    assert code == EXIT_CONFIGURATION


def test_ctrl_c_is_reported_as_interrupted() -> None:
    assert reported(KeyboardInterrupt()) == ("eventcrm: interrupted\n", EXIT_INTERRUPTED)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            psycopg.OperationalError("server closed the connection unexpectedly"),
            "database_unavailable",
        ),
        (OperationalError("couldn't get a connection after 5.00 sec"), "database_unavailable"),
        (KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1"), "broker_unavailable"),
        (FileNotFoundError(2, "No such file or directory", "/x/y.csv"), "file_error"),
    ],
)
def test_failures_any_command_can_meet_midway_read_as_what_they_are(
    exc: BaseException, code: str
) -> None:
    error = user_facing(exc)
    assert error is not None
    assert error.code == code


def test_an_os_error_without_a_file_is_not_mistaken_for_a_file_error() -> None:
    assert user_facing(ConnectionResetError("reset by peer")) is None


def test_a_user_facing_error_survives_pickling_with_its_code_and_hint() -> None:
    """Import workers raise them in other processes."""
    error = WrongMasterKeyError("other key", hint="set the right one")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is WrongMasterKeyError
    assert (again.message, again.hint, again.code) == (
        "other key",
        "set the right one",
        "wrong_master_key",
    )
