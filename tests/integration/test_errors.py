"""Ordinary failures of the console script read as one line with a code and a documented
exit code (docs/errors.md), never as a traceback — each case run as a real subprocess
against the real PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from infra.bootstrap import recreate_database
from tests.conftest import TEST_MASTER_KEY

pytestmark = pytest.mark.integration

EVENTCRM = str(Path(sys.executable).parent / "eventcrm")
SAMPLE = str(Path(__file__).parents[2] / "infra" / "samples" / "interactions.jsonl")
OTHER_KEY = b64encode(bytes(range(100, 132))).decode()


@dataclass(frozen=True)
class Places:
    """What a case's environment and arguments may name (formatted into them)."""

    migrated: str
    unmigrated: str
    missing_database: str
    missing_role: str
    refused: str
    silent: str
    tmp: Path


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: str
    exit: int
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    before: tuple[str, ...] = ()
    """A command run first (successfully), with the default environment."""
    never_says: tuple[str, ...] = ()


BASE_ENV = {
    "EVENTCRM_DATABASE_URL": "{migrated}",
    "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY,
    "EVENTCRM_HOME": "{tmp}/home",
}

CASES = {
    "unmigrated database": Case(
        ("history", "c-1"),
        "schema_not_migrated",
        3,
        ("no eventcrm schema", "run `eventcrm migrate`"),
        env={"EVENTCRM_DATABASE_URL": "{unmigrated}"},
    ),
    "master key not base64": Case(
        ("history", "c-1"),
        "invalid_master_key",
        3,
        ("EVENTCRM_MASTER_KEY is not valid base64",),
        env={"EVENTCRM_MASTER_KEY": "not-a-key!"},
    ),
    "master key missing": Case(
        ("history", "c-1"),
        "missing_master_key",
        3,
        ("EVENTCRM_MASTER_KEY is required",),
        env={"EVENTCRM_MASTER_KEY": ""},
    ),
    "non-integer setting": Case(
        ("history", "c-1"),
        "invalid_setting",
        3,
        ("EVENTCRM_LOCK_TIMEOUT_SECONDS='abc'", "valid integer"),
        env={"EVENTCRM_LOCK_TIMEOUT_SECONDS": "abc"},
    ),
    "missing policy file": Case(
        ("customer", "c-1"),
        "policy_unreadable",
        3,
        ("{tmp}/nope.toml", "No such file"),
        env={"EVENTCRM_POLICY": "{tmp}/nope.toml"},
    ),
    "invalid policy file": Case(
        ("customer", "c-1"),
        "invalid_policy",
        3,
        ("{tmp}/bad.toml", "version: is required"),
        env={"EVENTCRM_POLICY": "{tmp}/bad.toml"},
    ),
    "database URL that is not a URL": Case(
        ("history", "c-1"),
        "invalid_database_url",
        3,
        ("EVENTCRM_DATABASE_URL is not a PostgreSQL connection URL",),
        env={"EVENTCRM_DATABASE_URL": "not-a-url"},
    ),
    "unwritable --out": Case(
        ("export", "--out", "{tmp}/no/such/dir/out.csv"),
        "file_error",
        2,
        ("{tmp}/no/such/dir/out.csv", "No such file or directory"),
    ),
    "unwritable --rejects": Case(
        ("import", SAMPLE, "--rejects", "{tmp}/no/such/dir/rejects.jsonl"),
        "file_error",
        2,
        ("{tmp}/no/such/dir/rejects.jsonl",),
    ),
    "missing import file": Case(
        ("import", "{tmp}/nope.jsonl"),
        "file_error",
        2,
        ("no such file: {tmp}/nope.jsonl",),
    ),
    "wrong master key on import": Case(
        ("import", SAMPLE, "--rejects", "{tmp}/rejects.jsonl"),
        "wrong_master_key",
        3,
        ("wrapped by master key", "EVENTCRM_MASTER_KEY"),
        env={"EVENTCRM_MASTER_KEY": OTHER_KEY},
        before=("import", SAMPLE, "--rejects", "{tmp}/first-rejects.jsonl"),
    ),
    "wrong master key on history": Case(
        ("history", "cust-00007"),
        "wrong_master_key",
        3,
        ("wrapped by master key", "EVENTCRM_MASTER_KEY"),
        env={"EVENTCRM_MASTER_KEY": OTHER_KEY},
        before=("import", SAMPLE, "--rejects", "{tmp}/first-rejects.jsonl"),
    ),
    "database down": Case(
        ("history", "c-1"),
        "database_unavailable",
        4,
        ("Connection refused", "check that PostgreSQL is running"),
        env={"EVENTCRM_DATABASE_URL": "{refused}"},
    ),
    "database that never answers": Case(
        ("history", "c-1"),
        "database_unavailable",
        4,
        ("timeout expired",),
        env={"EVENTCRM_DATABASE_URL": "{silent}"},
    ),
    "missing database": Case(
        ("history", "c-1"),
        "database_unavailable",
        4,
        ("does not exist",),
        env={"EVENTCRM_DATABASE_URL": "{missing_database}"},
        never_says=("migrate", "schema"),
    ),
    "missing role": Case(
        ("history", "c-1"),
        "database_unavailable",
        4,
        ("role", "does not exist"),
        env={"EVENTCRM_DATABASE_URL": "{missing_role}"},
        never_says=("migrate", "schema"),
    ),
    "Kafka not configured": Case(
        ("publish", SAMPLE),
        "kafka_not_configured",
        3,
        ("set EVENTCRM_KAFKA_BOOTSTRAP",),
    ),
}


def run(
    places: Places, args: tuple[str, ...], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    values = {k: v.format(**vars(places)) for k, v in {**BASE_ENV, **env}.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCRM_")}
    command = [EVENTCRM, *(a.format(**vars(places)) for a in args)]
    return subprocess.run(
        command, env={**clean, **values}, capture_output=True, text=True, check=False, timeout=120
    )


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung host)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{server.getsockname()[1]}/eventcrm"


def refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/eventcrm"


@pytest.fixture
def places(pg_admin_url: str, fresh_database_url: str, tmp_path: Path) -> Iterator[Places]:
    (tmp_path / "bad.toml").write_text('base_currency = "EUR"\n')
    name = f"eventcrm_bare_{uuid.uuid4().hex[:10]}"
    unmigrated = recreate_database(pg_admin_url, name)
    try:
        with silent_server() as silent:
            yield Places(
                migrated=fresh_database_url,
                unmigrated=unmigrated,
                missing_database=make_conninfo(pg_admin_url, dbname=f"{name}_absent"),
                missing_role=make_conninfo(fresh_database_url, user=f"nobody_{name}"),
                refused=refused_url(),
                silent=silent,
                tmp=tmp_path,
            )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_an_ordinary_failure_is_one_line_with_its_code_and_exit_code(
    case: Case, places: Places
) -> None:
    if case.before:
        first = run(places, case.before, {})
        assert first.returncode == 0, first.stderr
    started = time.monotonic()
    result = run(places, case.args, case.env)
    elapsed = time.monotonic() - started

    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("eventcrm: error")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"eventcrm: error [{case.code}]: "), result.stderr
    for fragment in case.says:
        assert fragment.format(**vars(places)) in errors[0]
    for fragment in case.never_says:
        assert fragment not in errors[0]
    assert result.returncode == case.exit, result.stderr
    # A database that is down or hung is reported at libpq's connect timeout, not after a
    # pool's 30 s or psycopg's default 130 s (the bound is loose: the machine is shared).
    assert elapsed < 20


def test_an_unwritable_rejects_file_stops_the_import_before_anything_is_stored(
    places: Places,
) -> None:
    result = run(places, CASES["unwritable --rejects"].args, {})
    assert result.returncode == 2
    with psycopg.connect(places.migrated) as conn:
        assert conn.execute("SELECT count(*) FROM customer_events").fetchone() == (0,)


def test_debug_shows_the_traceback_and_still_ends_with_the_line_and_exit_code(
    places: Places,
) -> None:
    bad_key = {"EVENTCRM_MASTER_KEY": "not-a-key!"}
    for args, env in (
        (("--debug", "history", "c-1"), bad_key),
        (("history", "c-1"), {**bad_key, "EVENTCRM_DEBUG": "1"}),
    ):
        result = run(places, args, env)
        assert "Traceback (most recent call last)" in result.stderr
        assert "InvalidMasterKeyError" in result.stderr
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith("eventcrm: error [invalid_master_key]")
        )
        assert result.returncode == 3


def test_a_misspelt_variable_is_named_with_the_closest_setting_once(places: Places) -> None:
    result = run(places, ("schema",), {"EVENTCRM_DATABSE_URL": "{migrated}"})
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "EVENTCRM_DATABSE_URL" in line]
    assert warnings == [
        "eventcrm: warning: EVENTCRM_DATABSE_URL is not an eventcrm setting and is ignored; "
        "did you mean EVENTCRM_DATABASE_URL?"
    ]


def test_a_misspelt_variable_in_dotenv_is_named_too(places: Places) -> None:
    (places.tmp / ".env").write_text("EVENTCRM_MASTR_KEY=abc\n")
    values = {k: v.format(**vars(places)) for k, v in BASE_ENV.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCRM_")}
    result = subprocess.run(
        [EVENTCRM, "schema"],
        env={**clean, **values},
        cwd=places.tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "EVENTCRM_MASTR_KEY is not an eventcrm setting" in result.stderr
    assert "did you mean EVENTCRM_MASTER_KEY?" in result.stderr


def test_the_embedded_default_says_where_it_runs_and_how_to_use_a_real_database(
    places: Places,
) -> None:
    home = places.tmp / "embedded-home"
    result = run(
        places,
        ("history", "c-1"),
        {"EVENTCRM_DATABASE_URL": "", "EVENTCRM_MASTER_KEY": "", "EVENTCRM_HOME": str(home)},
    )
    assert "Traceback" not in result.stderr
    assert f"using the embedded PostgreSQL in {home / 'pgdata'}" in result.stderr
    assert "set EVENTCRM_DATABASE_URL to use your own database" in result.stderr
    assert "no history for customer 'c-1'" in result.stderr
    assert result.returncode == 1
