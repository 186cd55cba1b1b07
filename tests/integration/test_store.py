"""The event store against a real PostgreSQL: record, dedupe, positions, PII, immutability."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from adapters.store import CustomerNotFoundError, CustomerStore, Item, StalePositionError
from domain.customer import customer_uuid
from tests.conftest import StoreFactory

pytestmark = pytest.mark.integration

PII_MARKER = "Zqxj-PII-Marker"


def purchase(customer: str, event_id: str, amount: str = "19.90", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "source": "shop",
        "customer_id": customer,
        "kind": "purchase",
        "occurred_at": "2025-03-01T10:00:00+01:00",
        "amount": amount,
        "currency": "EUR",
        **extra,
    }


def registered(customer: str, event_id: str, name: str = "Ada Lovelace") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "source": "crm",
        "customer_id": customer,
        "kind": "registered",
        "occurred_at": "2025-01-01T09:00:00Z",
        "profile": {
            "name": name,
            "email": "ada@example.com",
            "phone": "+4930123456",
            "country": "DE",
        },
    }


def test_records_a_batch_and_reports_an_outcome_per_item(store: CustomerStore, unique: str) -> None:
    c = f"c-{unique}"
    outcomes = store.record([registered(c, f"r-{unique}"), purchase(c, f"p-{unique}")])

    assert [o.status for o in outcomes] == ["recorded", "recorded"]
    assert [o.version for o in outcomes] == [2, 3]  # v1 is the customer's creation
    history = store.history(c)
    assert [e.version for e in history] == [1, 2, 3]
    assert history[2].state["amount"] == Decimal("19.90")
    assert all(e.chain_ok for e in history)


def test_same_key_and_payload_is_a_duplicate_no_op(store: CustomerStore, unique: str) -> None:
    c = f"c-{unique}"
    first = store.record([purchase(c, f"p-{unique}")])
    again = store.record([purchase(c, f"p-{unique}", amount="19.9")])  # same meaning

    assert first[0].status == "recorded"
    assert again[0].status == "duplicate"
    assert again[0].version == first[0].version
    assert len(store.history(c)) == 2


def test_same_key_with_another_payload_is_rejected_as_conflicting(
    store: CustomerStore, unique: str
) -> None:
    c = f"c-{unique}"
    store.record([purchase(c, f"p-{unique}")])
    outcome = store.record([purchase(c, f"p-{unique}", amount="20.00")])[0]

    assert outcome.status == "rejected"
    assert outcome.code == "conflicting_duplicate"
    assert len(store.history(c)) == 2


def test_duplicates_inside_one_batch_are_recognised(store: CustomerStore, unique: str) -> None:
    c = f"c-{unique}"
    outcomes = store.record(
        [purchase(c, f"p-{unique}"), purchase(c, f"p-{unique}"), purchase(c, f"p-{unique}", "1.00")]
    )
    assert [o.status for o in outcomes] == ["recorded", "duplicate", "rejected"]


def test_invalid_items_are_rejected_and_dead_lettered_while_the_rest_flow_on(
    store: CustomerStore, unique: str, database_url: str
) -> None:
    c = f"c-{unique}"
    batch = [
        Item(b"{not json", provenance={"topic": "t", "partition": 0, "offset": 1}),
        purchase(c, f"p1-{unique}"),
        {**purchase(c, f"p2-{unique}"), "currency": "eur"},
        purchase(c, f"p3-{unique}"),
    ]
    outcomes = store.record(batch)

    assert [o.status for o in outcomes] == ["rejected", "recorded", "rejected", "recorded"]
    assert outcomes[0].code == "malformed_json"
    assert outcomes[2].rejections[0].field == "currency"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT code, payload, provenance FROM dead_letters WHERE payload = %s "
            "OR event_id = %s ORDER BY id",
            (b"{not json", f"p2-{unique}"),
        ).fetchall()
    assert [r[0] for r in rows] == ["malformed_json", "invalid_currency"]
    assert bytes(rows[0][1]) == b"{not json"
    assert rows[0][2] == {"topic": "t", "partition": 0, "offset": 1}


def test_positions_commit_with_the_batch_and_a_stale_position_is_refused(
    store: CustomerStore, unique: str
) -> None:
    c = f"c-{unique}"
    name = f"ingest:interactions:{unique}:0"
    store.record([purchase(c, f"p1-{unique}")], positions=[Tracking(name, 41)])
    assert store.position(name) == 41

    with pytest.raises(StalePositionError):
        store.record([purchase(c, f"p2-{unique}")], positions=[Tracking(name, 41)])
    assert len(store.history(c)) == 2  # the refused batch left nothing behind


def test_two_concurrent_writers_on_one_customer_lose_no_update(
    database_url: str, make_store: StoreFactory, unique: str
) -> None:
    c = f"c-{unique}"
    writers = [make_store(database_url), make_store(database_url)]
    per_writer = 40
    errors: list[BaseException] = []

    def write(n: int, store: CustomerStore) -> None:
        try:
            for i in range(per_writer):
                outcome = store.record([purchase(c, f"w{n}-{i}-{unique}")])[0]
                assert outcome.status == "recorded", outcome
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    history = writers[0].history(c)
    assert [e.version for e in history] == list(range(1, 2 * per_writer + 2))
    assert {e.state["event_id"] for e in history[1:]} == {
        f"w{n}-{i}-{unique}" for n in range(2) for i in range(per_writer)
    }
    assert all(e.chain_ok for e in history)


def test_personal_data_is_encrypted_in_the_stored_bytes(
    store: CustomerStore, unique: str, database_url: str
) -> None:
    c = f"c-{unique}"
    store.record([registered(c, f"r-{unique}", name=PII_MARKER)])

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT state FROM customer_events WHERE originator_id = %s", (customer_uuid(c),)
        ).fetchall()
        whole_table = conn.execute("SELECT string_agg(state, '') FROM customer_events").fetchone()
    assert rows
    assert whole_table is not None
    for blob in (b"".join(bytes(r[0]) for r in rows), bytes(whole_table[0])):
        assert PII_MARKER.encode() not in blob
        assert b"ada@example.com" not in blob
    assert store.history(c)[1].state["personal"]["profile"]["name"] == PII_MARKER


def test_after_the_key_is_shredded_history_still_replays_without_personal_data(
    store: CustomerStore, unique: str
) -> None:
    c = f"c-{unique}"
    store.record([registered(c, f"r-{unique}"), purchase(c, f"p-{unique}")])
    store.keyring.forget(customer_uuid(c))

    history = store.history(c)
    assert history[1].state["personal"] is None
    assert history[1].state["personal_erased"] is True
    assert history[2].state["amount"] is not None
    assert all(e.chain_ok for e in history)
    outcome = store.record([purchase(c, f"p2-{unique}")])[0]
    assert outcome.code == "customer_forgotten"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE customer_events SET topic = topic",
        "DELETE FROM customer_events",
        "TRUNCATE customer_events",
    ],
)
def test_the_application_role_cannot_change_stored_events(
    store: CustomerStore, unique: str, database_url: str, statement: str
) -> None:
    store.record([purchase(f"c-{unique}", f"p-{unique}")])
    app_url = psycopg.conninfo.make_conninfo(database_url, user="eventcrm_app")
    with psycopg.connect(app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_even_the_owner_cannot_update_or_delete_events_while_the_trigger_stands(
    store: CustomerStore, unique: str, database_url: str
) -> None:
    store.record([purchase(f"c-{unique}", f"p-{unique}")])
    with psycopg.connect(database_url) as conn:
        for statement in (
            "UPDATE customer_events SET topic = topic",
            "DELETE FROM customer_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
                conn.execute(statement)
            conn.rollback()


def test_an_ops_action_on_an_alert_is_appended_to_the_customers_history(
    store: CustomerStore, unique: str
) -> None:
    c = f"c-{unique}"
    store.record([purchase(c, f"p-{unique}")])
    version = store.record_alert_action(
        c, action="acknowledged", alert_id="alert-1", by="kim", reason="calling them"
    )
    assert version == 3
    last = store.stored_events(c)[-1]
    assert last[1].endswith("AlertActionRecorded")
    assert (last[2]["action"], last[2]["by"], last[2]["until"]) == ("acknowledged", "kim", None)


def test_an_ops_action_on_an_unknown_customer_is_refused(store: CustomerStore, unique: str) -> None:
    with pytest.raises(CustomerNotFoundError):
        store.record_alert_action(
            f"nobody-{unique}", action="resolved", alert_id="a", by="kim", reason=""
        )
