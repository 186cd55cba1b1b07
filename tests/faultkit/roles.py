"""Pipeline roles as processes (`eventcrm serve --role ROLE`, as production runs them),
and the small tools every fault run needs: publish, count, wait for progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg

from infra.kafka import producer
from tests.conftest import TEST_MASTER_KEY, alerting_policy
from tests.faultkit.switch import SWITCH

_LOGS: dict[int, IO[bytes]] = {}
"""The log file of each process `serve_role` started, by pid."""


def serve_role(
    role: str,
    url: str,
    bootstrap: str,
    prefix: str,
    *,
    batch_size: int = 500,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`eventcrm serve --role ROLE` as its own process; its log goes to a temporary
    file (a pipe nobody reads could fill up and block it)."""
    environment = {
        **{k: v for k, v in os.environ.items() if k != SWITCH},
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(url, user="eventcrm_app"),
        "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY,
        "EVENTCRM_POLICY": str(alerting_policy()),
        "EVENTCRM_KAFKA_BOOTSTRAP": bootstrap,
        "EVENTCRM_TOPIC_PREFIX": prefix,
        "EVENTCRM_KAFKA_SESSION_TIMEOUT_SECONDS": "2",
        "EVENTCRM_RECORD_BATCH_SIZE": str(batch_size),
        **(env or {}),
    }
    command = [str(Path(sys.executable).parent / "eventcrm"), "serve", "--role", role]
    log = tempfile.TemporaryFile(prefix=f"eventcrm-{role}-")  # noqa: SIM115 - closed by stop_role
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    _LOGS[process.pid] = log
    return process


def log_of(process: subprocess.Popen[bytes]) -> str:
    """What a running (or stopped) role process logged so far."""
    log = _LOGS.get(process.pid)
    if log is None:
        return ""
    log.flush()
    with open(log.fileno(), "rb", closefd=False) as reader:
        reader.seek(0)
        return reader.read().decode(errors="replace")


def stop_role(process: subprocess.Popen[bytes], *, grace: float = 60) -> str:
    """SIGTERM, wait (SIGKILL after ``grace`` s); returns the end of its log.

    SIGTERM goes only once the role says it is serving: before that (imports, the
    start-up checks) its handler is not installed yet, and SIGTERM would end it with
    -15 instead of a clean exit 0 (the cause of a flaky two-ingest test)."""
    started = time.monotonic()
    while process.poll() is None and "serving " not in log_of(process):
        if time.monotonic() - started > grace:
            break
        time.sleep(0.1)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    text = log_of(process)
    log = _LOGS.pop(process.pid, None)
    if log is not None:
        log.close()
    return text[-3000:]


def kill_role(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, and forget its log."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    log = _LOGS.pop(process.pid, None)
    if log is not None:
        log.close()


def publish(bootstrap: str, topic: str, items: Sequence[dict[str, Any]]) -> None:
    client = producer(bootstrap)
    try:
        for item in items:
            client.send(topic, key=item["customer_id"].encode(), value=orjson.dumps(item))
        client.flush()
    finally:
        client.close()


def publish_raw(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    client = producer(bootstrap)
    try:
        for key, value in records:
            client.send(topic, key=key, value=value)
        client.flush()
    finally:
        client.close()


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def wait_for_progress(
    progress: Callable[[], int],
    done: Callable[[int], bool],
    *,
    stall: float,
    what: str,
    poll: float = 0.25,
) -> None:
    """Wait until ``done(progress())``, failing only if ``progress()`` stops growing for
    ``stall`` seconds: a progress condition, not a wall-clock limit on the whole run."""
    last = progress()
    moved = time.monotonic()
    while not done(last):
        time.sleep(poll)
        now = progress()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            state = getattr(progress, "state", last)
            raise AssertionError(f"no progress for {stall:.0f}s waiting for {what} ({state})")


class Roles:
    """The three pipeline roles (or some of them) as processes, restartable one by one."""

    def __init__(
        self,
        url: str,
        bootstrap: str,
        prefix: str,
        *,
        roles: Sequence[str] = ("ingest", "relay", "project"),
        batch_size: int = 100,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._args = (url, bootstrap, prefix)
        self._batch_size = batch_size
        self._env = dict(env or {})
        self.processes = {role: self._spawn(role) for role in roles}
        self.crashed: list[tuple[str, int | None, str]] = []
        """Roles found dead without being killed: ``(role, returncode, log)``."""

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        url, bootstrap, prefix = self._args
        return serve_role(role, url, bootstrap, prefix, batch_size=self._batch_size, env=self._env)

    def check_alive(self) -> None:
        """Record (and restart) any role that died by itself: a crash."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                self.crashed.append((role, process.returncode, stop_role(process)))
                self.processes[role] = self._spawn(role)

    def kill(self, role: str) -> None:
        """SIGKILL one role and start it again at once."""
        kill_role(self.processes[role])
        self.processes[role] = self._spawn(role)

    def log(self, role: str) -> str:
        return log_of(self.processes[role])

    def stop(self) -> dict[str, tuple[int | None, str]]:
        """SIGTERM every role; ``role -> (returncode, end of log)``."""
        self.check_alive()
        return {
            role: (process.returncode, log)
            for role, process in self.processes.items()
            if (log := stop_role(process)) is not None
        }
