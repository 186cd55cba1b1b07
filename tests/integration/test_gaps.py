"""The gap test: a tailing reader of the notification log never skips a committed event.

Writers pause at random between their INSERT and their COMMIT. With eventsourcing's
EXCLUSIVE table lock, commit order equals notification order and the reader misses
nothing; the negative control removes the lock and shows the same reader does miss,
so the test can catch the bug it guards against.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from psycopg import Cursor
from psycopg.rows import DictRow

from adapters.crypto import MasterKey
from adapters.recorder import CustomerRecorder
from adapters.store import CustomerStore
from infra.bootstrap import store_env
from tests.conftest import TEST_MASTER_KEY, scratch_database, settings_for

pytestmark = pytest.mark.integration

WRITERS = 6
BATCHES_PER_WRITER = 25


class PausingRecorder(CustomerRecorder):
    """Sleeps after the INSERT has run and before the transaction commits."""

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        time.sleep(random.uniform(0, 0.015))
        return ids


class UnlockedPausingRecorder(PausingRecorder):
    """The bug under test: inserts that do not serialise on the table lock."""

    def _lock_table(self, curs: Cursor[DictRow]) -> None:
        return None


def _store(url: str, recorder: type[CustomerRecorder]) -> CustomerStore:
    class Store(CustomerStore):
        recorder_class = recorder

    settings = settings_for(url)
    return Store(
        store_env(url, role=settings.app_role, settings=settings),
        master_key=MasterKey.from_text(TEST_MASTER_KEY),
        max_future_skew=timedelta(minutes=5),
        clock=lambda: datetime.now(UTC),
    )


def _run(url: str, recorder: type[CustomerRecorder]) -> tuple[set[int], set[int]]:
    """Run writers and a tailing reader; return (all stored ids, ids the reader saw)."""
    stores = [_store(url, recorder) for _ in range(WRITERS)]
    reader = _store(url, CustomerRecorder)
    done = threading.Event()
    seen: set[int] = set()
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for b in range(BATCHES_PER_WRITER):
                batch = [
                    {
                        "event_id": f"w{n}-{b}-{i}",
                        "source": "gap",
                        "customer_id": f"gap-{n}-{i}",
                        "kind": "login",
                        "occurred_at": "2025-01-01T00:00:00Z",
                    }
                    for i in range(3)
                ]
                stores[n].record(batch)
        except BaseException as exc:  # pragma: no cover - asserted below
            failures.append(exc)

    def tail() -> None:
        last = 0
        while True:
            finished = done.is_set()
            for notification in reader.recorder.select_notifications(start=last + 1, limit=500):
                seen.add(notification.id)
                last = max(last, notification.id)
            if finished:
                return
            time.sleep(0.0005)

    tailer = threading.Thread(target=tail)
    tailer.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    tailer.join()
    everything = {n.id for n in reader.recorder.select_notifications(start=1, limit=1_000_000)}
    for s in [*stores, reader]:
        s.close()
    assert not failures, failures
    return everything, seen


def test_a_tailing_reader_misses_no_event_while_writers_commit_out_of_order(
    fresh_database_url: str,
) -> None:
    everything, seen = _run(fresh_database_url, PausingRecorder)
    assert len(everything) == WRITERS * 3 + WRITERS * BATCHES_PER_WRITER * 3  # creations + logins
    assert everything - seen == set()


def test_negative_control_without_the_table_lock_the_reader_does_miss_events(
    pg_admin_url: str,
) -> None:
    missed: set[int] = set()
    for _ in range(5):
        with scratch_database(pg_admin_url) as url:
            everything, seen = _run(url, UnlockedPausingRecorder)
        missed = everything - seen
        if missed:
            break
    assert missed, "the gap test could not detect missing events without the lock"
