"""`rebuild` is atomic for readers (a shadow table swapped in one transaction) and keeps
what the projector writes meanwhile, against a real PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from adapters.readmodels import ReadModelStore, StoreStateLoader, audit, rebuild, rebuilt_rows
from adapters.store import CustomerStore
from domain.customer import customer_uuid
from infra.bootstrap import default_policy_text
from projections import advance, load_policy, next_deadline, snapshot
from streams.projector import ReadModelRow
from tests.conftest import StoreFactory
from tests.integration.test_cli import run
from tests.integration.test_readmodels import POLICY, _interaction, _record_history

pytestmark = pytest.mark.integration

CUSTOMERS = 40
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = datetime(2026, 3, 2, tzinfo=UTC)
OTHER_POLICY = load_policy(
    re.sub(r'(?m)^version = ".*"$', 'version = "rebuild-test-b"', default_policy_text())
)

Sample = tuple[int, int, int, datetime | None, str | None]


def _store_with_customers(url: str, make_store: StoreFactory) -> CustomerStore:
    store = make_store(url)
    for n in range(CUSTOMERS):
        _record_history(store, f"rb-{n:03}", ops=False)
    return store


@pytest.fixture
def populated(fresh_database_url: str, make_store: StoreFactory) -> CustomerStore:
    return _store_with_customers(fresh_database_url, make_store)


def _poll_while(url: str, work: Callable[[], object]) -> list[Sample]:
    """Run ``work`` while a reader polls the whole table, one statement per look (as a
    dashboard would); returns what the reader saw, before, during and after."""
    samples: list[Sample] = []
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                finished = done.is_set()
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT evaluated_at), "
                    "count(DISTINCT snapshot->>'policy_version'), min(evaluated_at), "
                    "min(snapshot->>'policy_version') FROM read_models"
                ).fetchone()
                assert row is not None
                samples.append(row)
                if finished:
                    return

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        time.sleep(0.05)
        work()
    finally:
        done.set()
        reader.join()
    return samples


def _slowly(pause: float = 0.03) -> Callable[[int], None]:
    return lambda done: time.sleep(pause)


def test_a_reader_polling_during_a_rebuild_never_sees_a_mix_of_policies_or_instants(
    populated: CustomerStore, fresh_database_url: str
) -> None:
    read_models = ReadModelStore(populated)
    assert rebuild(read_models, populated, POLICY, as_of=T0) == CUSTOMERS

    samples = _poll_while(
        fresh_database_url,
        lambda: rebuild(
            read_models, populated, OTHER_POLICY, as_of=T1, batch=3, on_progress=_slowly()
        ),
    )

    old = (CUSTOMERS, 1, 1, T0, POLICY.version)
    new = (CUSTOMERS, 1, 1, T1, OTHER_POLICY.version)
    assert set(samples) == {old, new}, "only the whole old table or the whole new one"
    assert samples[0] == old
    assert samples[-1] == new
    assert samples.count(old) > 10, "the reader looked many times while the rebuild ran"


def test_negative_control_the_same_reader_sees_a_mix_when_rows_are_rewritten_in_batches(
    populated: CustomerStore, fresh_database_url: str
) -> None:
    """What rebuild did before: upsert batch by batch into the live table."""
    read_models = ReadModelStore(populated)
    rebuild(read_models, populated, POLICY, as_of=T0)

    def in_batches() -> None:
        rows = list(rebuilt_rows(populated, OTHER_POLICY, as_of=T1))
        for start in range(0, len(rows), 3):
            read_models.upsert(rows[start : start + 3])
            time.sleep(0.03)

    samples = _poll_while(fresh_database_url, in_batches)
    assert any(instants == 2 and policies == 2 for _, instants, policies, _, _ in samples)


def _projected(store: CustomerStore, customer_id: str, *, at: datetime | None = None) -> Any:
    """The row the projector writes for a customer: its stored events folded through
    the latest version (and advanced to ``at``, as its timer does)."""
    version = store.stored_events(customer_id)[-1][0]
    state = StoreStateLoader(store, POLICY).load(customer_id, through_version=version)
    if at is not None:
        advance(state, at)
    position = store.last_positions()[customer_uuid(customer_id)]
    return ReadModelRow(customer_id, snapshot(state), version, position, next_deadline(state))


def test_what_the_projector_writes_during_a_rebuild_is_kept_and_stray_rows_go(
    populated: CustomerStore, fresh_database_url: str
) -> None:
    read_models = ReadModelStore(populated)
    rebuild(read_models, populated, POLICY, as_of=T0)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO read_models (customer_id, applied_version, applied_position, "
            "snapshot) VALUES ('not-in-the-store', 9, 9, '{}')"
        )

    def meanwhile(done: int) -> None:
        """Once the rebuild has read every customer, the projector goes on: a new event
        for one customer, a new customer, and a timer advancing a third."""
        if done < CUSTOMERS:
            return
        populated.record([_interaction("rb-003", "rb-003-late", 70)])
        populated.record([_interaction("rb-new", "rb-new-1", 71)])
        read_models.upsert(
            [
                _projected(populated, "rb-003"),
                _projected(populated, "rb-new"),
                _projected(populated, "rb-005", at=T1 + timedelta(hours=5)),
            ]
        )

    assert rebuild(read_models, populated, POLICY, as_of=T1, batch=7, on_progress=meanwhile) == (
        CUSTOMERS + 1
    )

    models = {m.customer_id: m for m in read_models.all()}
    assert "not-in-the-store" not in models
    assert models["rb-003"].applied_version == 7, "the projector's newer version"
    assert models["rb-new"].applied_version == 2, "a customer the rebuild never read"
    assert models["rb-005"].evaluated_at == T1 + timedelta(hours=5), "a later evaluation"
    assert {
        m.evaluated_at for k, m in models.items() if k not in {"rb-003", "rb-new", "rb-005"}
    } == {T1}
    found = audit(read_models, populated, POLICY)
    assert (found.missing, found.extra, found.stale, found.differences) == ([], [], [], [])


def test_rebuild_refuses_an_as_of_for_the_live_read_models_and_changes_nothing(
    fresh_database_url: str, populated: CustomerStore
) -> None:
    url = fresh_database_url
    run(url, "rebuild")
    before = _table(url)

    result = run(url, "rebuild", "--as-of", "2025-06-01T00:00:00Z", check=False)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "export --as-of 2025-06-01T00:00:00Z" in " ".join(result.stderr.split())
    assert _table(url) == before


def _table(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM read_models ORDER BY customer_id").fetchall()
