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
from collections.abc import Callable, Sequence
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


Batch = Callable[[int, int], list[dict[str, Any]]]
Tail = Callable[[CustomerStore, int], list[int]]


def _logins(writer: int, batch: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"w{writer}-{batch}-{i}",
            "source": "gap",
            "customer_id": f"gap-{writer}-{i}",
            "kind": "login",
            "occurred_at": "2025-01-01T00:00:00Z",
        }
        for i in range(3)
    ]


def _notifications(store: CustomerStore, after: int) -> list[int]:
    return [n.id for n in store.recorder.select_notifications(start=after + 1, limit=1_000_000)]


def _run(
    url: str, recorder: type[CustomerRecorder], batch: Batch = _logins, tail: Tail = _notifications
) -> tuple[set[int], set[int]]:
    """Run writers and a tailing reader; return (all stored ids, ids the reader saw)."""
    stores = [_store(url, recorder) for _ in range(WRITERS)]
    reader = _store(url, CustomerRecorder)
    done = threading.Event()
    seen: set[int] = set()
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for b in range(BATCHES_PER_WRITER):
                stores[n].record(batch(n, b))
        except BaseException as exc:  # pragma: no cover - asserted below
            failures.append(exc)

    def follow() -> None:
        last = 0
        while True:
            finished = done.is_set()
            for found in tail(reader, last):
                seen.add(found)
                last = max(last, found)
            if finished:
                return
            time.sleep(0.0005)

    tailer = threading.Thread(target=follow)
    tailer.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    tailer.join()
    everything = set(tail(reader, 0))
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


# --- dead letters: the relay tails them by id the same way --------------------------------


class PausingDeadLetterRecorder(CustomerRecorder):
    """Sleeps after a batch's dead letters are inserted and before it commits."""

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        time.sleep(random.uniform(0, 0.015))


class UnlockedPausingDeadLetterRecorder(PausingDeadLetterRecorder):
    def _lock_table(self, curs: Cursor[DictRow]) -> None:
        return None


def _bad(writer: int, batch: int) -> list[dict[str, Any]]:
    return [{"event_id": f"w{writer}-{batch}-{i}", "kind": "nonsense"} for i in range(3)]


def _dead_letters(store: CustomerStore, after: int) -> list[int]:
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute("SELECT id FROM dead_letters WHERE id > %s ORDER BY id", (after,))
        return [row["id"] for row in curs.fetchall()]


def test_a_tailing_reader_misses_no_dead_letter_while_writers_commit_out_of_order(
    fresh_database_url: str,
) -> None:
    """The relay follows `dead_letters` by id, as it follows the notification log."""
    everything, seen = _run(fresh_database_url, PausingDeadLetterRecorder, _bad, _dead_letters)
    assert len(everything) == WRITERS * BATCHES_PER_WRITER * 3
    assert everything - seen == set()


def test_negative_control_dead_letters_written_without_the_lock_are_missed(
    pg_admin_url: str,
) -> None:
    missed: set[int] = set()
    for _ in range(5):
        with scratch_database(pg_admin_url) as url:
            everything, seen = _run(url, UnlockedPausingDeadLetterRecorder, _bad, _dead_letters)
        missed = everything - seen
        if missed:
            break
    assert missed, "the gap test could not detect missed dead letters without the lock"
