"""Read models and the state loader against a real PostgreSQL, and the projector wired to
them: the forward-only write rule, the ops queries, rebuilding a customer from the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from psycopg import sql

from adapters.readmodels import ReadModelStore, StoreStateLoader, differences, rebuild
from adapters.readside import ProjectionReader, input_event
from adapters.recorder import EVENTS_TABLE
from adapters.store import CustomerStore, Item
from domain.customer import customer_uuid
from infra.bootstrap import default_policy_text
from infra.schema import SCHEMA_VERSION, check_schema
from projections import Change, Snapshot, fold, initial_state, load_policy, snapshot
from projections.ports import ChangePublisher, ReadModelRow, ReadModelSink, StateLoader
from streams.projector import Projector
from tests.conftest import StoreFactory
from tests.integration.test_store import purchase as store_purchase
from tests.unit.quality.simulate import at, purchase

pytestmark = pytest.mark.integration

POLICY = load_policy(default_policy_text())


def _snapshot(customer_id: str, days: list[float], as_of: float) -> Snapshot:
    events = [purchase(f"{customer_id}-{n}", day) for n, day in enumerate(days)]
    return snapshot(fold(customer_id, events, POLICY, as_of=at(as_of)))


def _row(
    customer_id: str,
    version: int,
    *,
    as_of: float = 30.0,
    position: int | None = None,
    deadline: datetime | None = None,
) -> ReadModelRow:
    days = [float(n * 5) for n in range(version - 1)]
    return ReadModelRow(
        customer_id=customer_id,
        snapshot=_snapshot(customer_id, days, as_of),
        applied_version=version,
        applied_position=version * 10 if position is None else position,
        next_deadline=deadline,
    )


@pytest.fixture
def readmodels(store: CustomerStore) -> ReadModelStore:
    return ReadModelStore(store)


def test_the_schema_is_at_the_current_version_with_read_models(store: CustomerStore) -> None:
    check_schema(store.datastore)
    assert SCHEMA_VERSION == 8
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute("SELECT to_regclass('read_models') IS NOT NULL AS present")
        row = curs.fetchone()
    assert row is not None
    assert row["present"]


def test_a_row_round_trips(readmodels: ReadModelStore, unique: str) -> None:
    deadline = at(61)
    row = _row(f"c-{unique}", 4, deadline=deadline)
    assert readmodels.upsert([row]) == 1

    stored = readmodels.get(row.customer_id)
    assert stored is not None
    assert (stored.applied_version, stored.applied_position) == (4, 40)
    assert stored.next_deadline == deadline
    assert stored.evaluated_at == at(30)
    assert stored.tier == row.snapshot.tier
    assert stored.lifecycle_stage == row.snapshot.lifecycle_stage
    assert stored.churn_score == row.snapshot.churn_score
    assert stored.churn_level == row.snapshot.churn_level
    assert stored.alert_state == row.snapshot.alert_state
    assert stored.snapshot == orjson.loads(orjson.dumps(row.snapshot.to_dict()))
    assert readmodels.get(f"nobody-{unique}") is None


def test_an_older_or_equal_version_never_overwrites_a_newer_one(
    readmodels: ReadModelStore, unique: str
) -> None:
    customer = f"c-{unique}"
    readmodels.upsert([_row(customer, 5)])

    assert readmodels.upsert([_row(customer, 4, as_of=90)]) == 0, "a zombie's older version"
    assert readmodels.upsert([_row(customer, 5)]) == 0, "a redelivery: the same row"
    stored = readmodels.get(customer)
    assert stored is not None
    assert (stored.applied_version, stored.evaluated_at) == (5, at(30))

    assert readmodels.upsert([_row(customer, 6, as_of=20)]) == 1, "more events always win"
    stored = readmodels.get(customer)
    assert stored is not None
    assert (stored.applied_version, stored.evaluated_at) == (6, at(20))


def test_a_later_evaluation_at_the_same_version_wins(
    readmodels: ReadModelStore, unique: str
) -> None:
    customer = f"c-{unique}"
    readmodels.upsert([_row(customer, 3, as_of=30)])
    assert readmodels.upsert([_row(customer, 3, as_of=200)]) == 1, "a timer advanced it"
    assert readmodels.upsert([_row(customer, 3, as_of=100)]) == 0, "an earlier timer, late"
    stored = readmodels.get(customer)
    assert stored is not None
    assert stored.evaluated_at == at(200)
    assert stored.snapshot["evaluated_at"] == at(200).isoformat()


def test_a_customer_with_only_its_created_event_is_later_evaluated(
    readmodels: ReadModelStore, unique: str
) -> None:
    customer = f"c-{unique}"
    empty = snapshot(initial_state(customer, POLICY))
    created = ReadModelRow(customer, empty, 1, 1, None)
    assert readmodels.upsert([created]) == 1
    assert readmodels.upsert([created]) == 0
    assert readmodels.upsert([_row(customer, 2)]) == 1


def test_a_batch_naming_a_customer_twice_keeps_its_newest_row(
    readmodels: ReadModelStore, unique: str
) -> None:
    a, b = f"a-{unique}", f"b-{unique}"
    written = readmodels.upsert([_row(b, 3), _row(a, 7), _row(a, 3), _row(a, 7, as_of=99)])
    assert written == 2
    stored = readmodels.get(a)
    assert stored is not None
    assert (stored.applied_version, stored.evaluated_at) == (7, at(99))
    assert readmodels.upsert([]) == 0


def test_ops_queries_see_the_whole_table(fresh_database_url: str, make_store: StoreFactory) -> None:
    readmodels = ReadModelStore(make_store(fresh_database_url), page_size=2)
    readmodels.upsert(
        [
            _row("c1", 3, position=120, deadline=at(40)),
            _row("c2", 2, position=77, deadline=at(45)),
            _row("c3", 4, position=130),
            _row("c4", 5, position=141, deadline=at(90)),
            _row("c5", 2, position=99, deadline=at(40)),
        ]
    )

    assert [m.customer_id for m in readmodels.all()] == ["c1", "c2", "c3", "c4", "c5"]
    assert readmodels.due(at(45)) == [("c1", 3, 120), ("c5", 2, 99), ("c2", 2, 77)]
    assert readmodels.due(at(39)) == []


def test_first_unapplied_is_the_first_stored_event_no_read_model_has_applied(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    store = make_store(fresh_database_url)
    readmodels = ReadModelStore(store)
    assert readmodels.first_unapplied() is None, "no events: nothing is owed"
    store.record(
        [
            Item(store_purchase("a", "a-1")),
            Item(store_purchase("b", "b-1")),
            Item(store_purchase("a", "a-2")),
        ]
    )
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, notification_id FROM {} "
                "ORDER BY notification_id"
            ).format(sql.Identifier(EVENTS_TABLE))
        )
        ids = {
            (r["originator_id"], r["originator_version"]): r["notification_id"]
            for r in curs.fetchall()
        }
    a, b = customer_uuid("a"), customer_uuid("b")
    assert readmodels.first_unapplied() == min(ids.values()), "no read model: all owed"

    readmodels.upsert([_row("a", 3, position=ids[a, 3]), _row("b", 1, position=ids[b, 1])])
    assert readmodels.first_unapplied() == ids[b, 2]
    readmodels.upsert([_row("b", 2, position=ids[b, 2])])
    assert readmodels.first_unapplied() is None, "everything applied"
    store.record([Item(store_purchase("a", "a-3"))])
    assert (readmodels.first_unapplied() or 0) > max(ids.values())


def test_the_application_role_may_delete_read_models_but_not_events(
    store: CustomerStore, readmodels: ReadModelStore, unique: str
) -> None:
    customer = f"c-{unique}"
    readmodels.upsert([_row(customer, 2)])
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("DELETE FROM read_models WHERE customer_id = %s", (customer,))
    assert readmodels.get(customer) is None
    with (
        pytest.raises(Exception, match=r"immutable|permission denied"),
        store.datastore.transaction(commit=True) as curs,
    ):
        curs.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(EVENTS_TABLE)))


# --- the state loader and the projector on the real adapters ----------------------------


def _interaction(customer: str, event_id: str, day: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "source": "shop",
        "customer_id": customer,
        "kind": "purchase",
        "occurred_at": (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day)).isoformat(),
        "amount": "120.00",
        "currency": "EUR",
        **extra,
    }


def _record_history(store: CustomerStore, customer: str, *, ops: bool = True) -> None:
    outcomes = store.record(
        [
            _interaction(customer, f"{customer}-p1", 0),
            _interaction(customer, f"{customer}-p2", 30),
            _interaction(customer, f"{customer}-p3", 55),
            {
                "event_id": f"{customer}-t1",
                "source": "helpdesk",
                "customer_id": customer,
                "kind": "support_ticket_opened",
                "occurred_at": "2025-03-10T08:00:00Z",
                "ticket_id": "T-1",
            },
            _interaction(customer, f"{customer}-p0", -20),  # late: before the others
        ]
    )
    assert [o.status for o in outcomes] == ["recorded"] * 5
    if not ops:
        return
    # An ops action: its `until` is stored as a datetime, and relayed as a string.
    store.record_alert_action(
        customer,
        action="snoozed",
        alert_id="alert-unknown",
        by="ops",
        reason="test",
        until=store.clock() + timedelta(days=2),
    )


def _relay_messages(store: CustomerStore, customer: str) -> list[bytes]:
    """What the relay publishes for this customer (positions made up, increasing)."""
    messages = []
    for version, topic, state in store.stored_events(customer):
        event = input_event(version, topic, state)
        messages.append(
            orjson.dumps(
                {
                    "position": 1000 + version,
                    "customer_id": customer,
                    "version": version,
                    "type": topic.rsplit(".", 1)[-1],
                    "event": None if event is None else event.to_dict(),
                }
            )
        )
    return messages


def test_the_store_state_loader_rebuilds_a_customer_through_a_version(
    store: CustomerStore, unique: str
) -> None:
    customer = f"c-{unique}"
    _record_history(store, customer)
    loader = StoreStateLoader(store, POLICY)
    reader = ProjectionReader(store, POLICY)
    events = reader.events(customer)  # versions 2..7

    through_four = loader.load(customer, through_version=4)
    expected = fold(customer, events[:3], POLICY, as_of=datetime(2025, 2, 25, tzinfo=UTC))
    assert snapshot(through_four) == snapshot(expected)

    everything = snapshot(loader.load(customer, through_version=99))
    assert everything.event_count == len(events)
    assert everything.evaluated_at is not None
    assert everything == reader.customer(customer, as_of=everything.evaluated_at)
    assert snapshot(loader.load(f"nobody-{unique}", through_version=5)).event_count == 0


class _Published(ChangePublisher):
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def publish(self, changes: Any) -> None:
        self.changes.extend(changes)


def test_the_projector_on_the_real_adapters_equals_a_replay(
    store: CustomerStore, unique: str
) -> None:
    customer = f"c-{unique}"
    _record_history(store, customer, ops=False)  # all in the past: timers still pending
    readmodels = ReadModelStore(store)
    loader: StateLoader = StoreStateLoader(store, POLICY)
    sink: ReadModelSink = readmodels
    projector = Projector(policy=POLICY, loader=loader, sink=sink, publisher=_Published())
    messages = _relay_messages(store, customer)

    projector.handle(messages[-2:])  # a cold start mid-history: rebuilt from the store
    stored = readmodels.get(customer)
    assert stored is not None
    assert (stored.applied_version, stored.applied_position) == (6, 1006)
    assert stored.evaluated_at is not None
    reader = ProjectionReader(store, POLICY)
    assert stored.snapshot == _json(reader.customer(customer, as_of=stored.evaluated_at))

    assert stored.next_deadline is not None
    now = stored.next_deadline + timedelta(days=1)
    projector.resume(readmodels.due(now))
    projector.tick(now)
    stored = readmodels.get(customer)
    assert stored is not None
    assert stored.evaluated_at == now
    assert stored.snapshot == _json(reader.customer(customer, as_of=now))

    projector.handle(messages)  # full redelivery: nothing changes
    again = readmodels.get(customer)
    assert again == stored

    # A restarted worker: the loader says how far the read model is projected, and a
    # redelivery of what it includes publishes nothing again.
    assert loader.projected([customer, f"nobody-{unique}"]) == {
        customer: (stored.applied_version, stored.applied_position, now)
    }
    published = _Published()
    restarted = Projector(policy=POLICY, loader=loader, sink=sink, publisher=published)
    restarted.handle(messages)
    assert published.changes == []
    assert restarted.applied_version(customer) == stored.applied_version
    assert readmodels.get(customer) == stored


def _json(value: Snapshot) -> Any:
    return orjson.loads(orjson.dumps(value.to_dict()))


def test_verify_finds_no_difference_for_a_live_projection_and_reports_a_tampered_one(
    store: CustomerStore, unique: str
) -> None:
    customer = f"c-{unique}"
    _record_history(store, customer, ops=False)
    readmodels = ReadModelStore(store)
    projector = Projector(
        policy=POLICY,
        loader=StoreStateLoader(store, POLICY),
        sink=readmodels,
        publisher=_Published(),
    )
    projector.handle(_relay_messages(store, customer))
    mine = [d for d in differences(readmodels, store, POLICY) if d.customer_id == customer]
    assert mine == []

    live = readmodels.get(customer)
    assert live is not None
    wrong = replace(
        ProjectionReader(store, POLICY).customer(customer, as_of=live.evaluated_at or at(0)),
        tier="platinum" if live.tier != "platinum" else "bronze",
    )
    readmodels.upsert(
        [
            ReadModelRow(
                customer_id=customer,
                snapshot=wrong,
                applied_version=live.applied_version,
                applied_position=live.applied_position,
                next_deadline=None,
            )
        ]
    )
    with psycopg_connect(store) as conn:  # same version and time: force the bad row in
        conn.execute(
            "UPDATE read_models SET tier = %s WHERE customer_id = %s", (wrong.tier, customer)
        )
    found = [d for d in differences(readmodels, store, POLICY) if d.customer_id == customer]
    assert [(d.field, d.live) for d in found] == [("tier", wrong.tier)]


def psycopg_connect(store: CustomerStore) -> Any:
    return store.datastore.get_connection()


def test_rebuild_recomputes_every_read_model_so_that_verify_finds_nothing(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    store = make_store(fresh_database_url)
    for n in range(3):
        _record_history(store, f"r-{n}", ops=n == 1)
    readmodels = ReadModelStore(store)
    as_of = datetime.now(UTC)

    assert rebuild(readmodels, store, POLICY, as_of=as_of) == 3
    models = {m.customer_id: m for m in readmodels.all()}
    assert set(models) == {"r-0", "r-1", "r-2"}
    assert all(m.evaluated_at == as_of for m in models.values())
    assert list(differences(readmodels, store, POLICY)) == []
    positions = store.last_positions()
    assert {m.applied_position for m in models.values()} == set(positions.values())
    assert rebuild(readmodels, store, POLICY, as_of=as_of) == 3  # idempotent
