"""Erasure by crypto-shredding (issue 10, item 1), against a real PostgreSQL and broker.

The oracle: after `forget`, no table and no topic eventcrm owns holds any of the erased
customer's personal values (as text, or as the bytes inside a bytea); every other
customer's rows are byte-identical; the chains verify; the replay is unchanged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from adapters.erasure import Eraser, Tombstones
from adapters.readside import ProjectionReader
from adapters.relay import Relay
from adapters.store import CustomerStore, Item
from adapters.topics import TopicNames, ensure_topics, read_topic
from domain.customer import customer_uuid
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import producer
from projections import load_policy
from tests.conftest import StoreFactory
from tests.integration.test_cli import SAMPLE, run

pytestmark = pytest.mark.integration

TARGET = "cust-00007"
OTHER = "cust-00008"
AS_OF = "2026-01-01T00:00:00+00:00"
SECRET = "Zqxj-Erasure-Marker"
"""A personal value only the target's dead letters carry."""

# Where each table names a customer: (column, by aggregate id or by upstream id).
CUSTOMER_COLUMNS = {
    "customer_events": ("originator_id", "uuid"),
    "interaction_keys": ("customer_id", "uuid"),
    "customer_keys": ("customer_id", "uuid"),
    "dead_letters": ("customer_id", "text"),
    "read_models": ("customer_id", "text"),
    "erasures": ("customer_id", "text"),
}


def _tables(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    return [r["tablename"] for r in rows]


def dump(store: CustomerStore) -> dict[str, list[str]]:
    """Every row of every table, as PostgreSQL's text form (bytea as hex)."""
    out: dict[str, list[str]] = {}
    with store.datastore.get_connection() as conn:
        for table in _tables(conn):
            rows = conn.execute(
                sql.SQL("SELECT t::text AS row FROM {} t ORDER BY 1").format(sql.Identifier(table))
            ).fetchall()
            out[table] = [r["row"] for r in rows]
    return out


def others(store: CustomerStore, customer_id: str) -> dict[str, list[str]]:
    """Every row of every customer table except those of `customer_id`."""
    out: dict[str, list[str]] = {}
    with store.datastore.get_connection() as conn:
        for table, (column, kind) in CUSTOMER_COLUMNS.items():
            value: Any = customer_uuid(customer_id) if kind == "uuid" else customer_id
            rows = conn.execute(
                sql.SQL(
                    "SELECT t::text AS row FROM {} t WHERE {} IS DISTINCT FROM %s ORDER BY 1"
                ).format(sql.Identifier(table), sql.Identifier(column)),
                (value,),
            ).fetchall()
            out[table] = [r["row"] for r in rows]
    return out


def leaks(rows: dict[str, list[str]], secrets: list[str]) -> list[tuple[str, str]]:
    """(table, secret) for each personal value found as text or as bytes in hex."""
    found = []
    for table, texts in rows.items():
        blob = "\n".join(texts)
        for secret in secrets:
            if secret in blob or secret.encode().hex() in blob:
                found.append((table, secret))
    return found


def secret_of(customer_id: str) -> str:
    return f"{SECRET}-{customer_id}"


def bad_line(customer_id: str, n: int) -> dict[str, Any]:
    """An interaction rejected for its currency, carrying a personal value."""
    return {
        "event_id": f"bad-{customer_id}-{n}",
        "source": "shop",
        "customer_id": customer_id,
        "kind": "registered",
        "occurred_at": "2025-06-01T10:00:00Z",
        "profile": {"name": secret_of(customer_id), "email": f"{n}@{customer_id}.example.com"},
        "currency": "XXX-not-a-currency",
    }


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def test_forget_shreds_the_customer_everywhere_and_leaves_every_other_row_alone(
    fresh_database_url: str, make_store: StoreFactory, tmp_path: Path
) -> None:
    url = fresh_database_url
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r.jsonl"))
    store = make_store(url)  # the application role, as every command runs
    broken = Item(
        b'{"name": "' + secret_of(TARGET).encode() + b'", not json',
        provenance={"topic": "eventcrm.interactions", "partition": 0, "offset": 7, "key": TARGET},
    )
    store.record([bad_line(TARGET, 1), bad_line(OTHER, 1), broken])
    run(url, "rebuild")
    history = json.loads(run(url, "history", TARGET, "--json").stdout)
    profile = history["events"][1]["state"]["personal"]["profile"]
    secrets = [profile["name"], profile["email"], profile["phone"]]
    assert leaks(dump(store), secrets) == [], "events hold personal data only encrypted"
    secrets.append(secret_of(TARGET))
    with store.datastore.get_connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM dead_letters WHERE customer_id = %s", (TARGET,)
        ).fetchone()
    assert row is not None
    assert row["n"] == 2, "a message too broken to read is named by its Kafka key"
    assert leaks({"dead_letters": dump(store)["dead_letters"]}, [secret_of(TARGET)])
    reader = ProjectionReader(store, load_policy_default())
    replay_before = [s.to_dict() for s in reader.replay(TARGET, as_of=_at(AS_OF))]
    others_before = others(store, TARGET)

    receipt = Eraser(store, clock=store.clock).forget(
        TARGET, by="dpo@example.com", reason="GDPR art. 17"
    )

    assert receipt.customer_id == TARGET
    assert receipt.destroyed["data_key"] == "shredded"
    assert receipt.destroyed["dead_letters_erased"] == 2
    assert receipt.destroyed["events_with_personal_data"] >= 1
    after = dump(store)
    assert leaks(after, secrets) == []
    assert others(store, TARGET) == others_before, "every other customer is byte-identical"
    assert store.verify_chains().ok
    entries = store.history(TARGET)
    assert entries[-1].topic.endswith("Forgotten")
    assert all(e.state.get("personal") is None for e in entries)
    assert any(e.state.get("personal_erased") for e in entries)
    fresh = ProjectionReader(make_store(url), load_policy_default())
    assert [s.to_dict() for s in fresh.replay(TARGET, as_of=_at(AS_OF))] == replay_before

    again = Eraser(store, clock=store.clock).forget(TARGET, by="someone", reason="twice")
    assert again.already
    assert again.receipt_id == receipt.receipt_id
    assert dump(store) == after, "forgetting twice changes nothing"

    # Later input for the erased customer is refused, and its dead letters stored erased.
    outcomes = store.record([bad_line(TARGET, 2), {**bad_line(TARGET, 3), "currency": "EUR"}])
    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    assert leaks(dump(store), secrets) == []
    # Re-importing the file refuses the erased customer's lines (dead letters stored
    # erased); once more adds no dead letter that is already there.
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r2.jsonl"))
    letters = dump(store)["dead_letters"]
    assert leaks(dump(store), secrets) == []
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r3.jsonl"))
    assert dump(store)["dead_letters"] == letters


def test_import_dead_letters_name_the_customer_and_are_not_doubled(
    fresh_database_url: str, make_store: StoreFactory, tmp_path: Path
) -> None:
    url = fresh_database_url
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r.jsonl"))
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r.jsonl"))
    store = make_store(url)
    with store.datastore.get_connection() as conn:
        rows = conn.execute("SELECT code, customer_id FROM dead_letters ORDER BY id").fetchall()
    assert [(r["code"], r["customer_id"]) for r in rows] == [
        ("missing_offset", "cust-00003"),
        ("wrong_type", "cust-00004"),
        ("malformed_json", None),
    ]


def test_forget_and_erasures_on_the_command_line(fresh_database_url: str, tmp_path: Path) -> None:
    url = fresh_database_url
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "r.jsonl"))
    missing = run(url, "forget", TARGET, "--by", "dpo", "--reason", " ", check=False)
    assert missing.returncode == 2
    assert "invalid_option" in missing.stderr
    first = json.loads(
        run(url, "forget", TARGET, "--by", "dpo", "--reason", "art. 17", "--json").stdout
    )
    second = json.loads(
        run(url, "forget", TARGET, "--by", "dpo", "--reason", "art. 17", "--json").stdout
    )
    assert not first["already_erased"]
    assert second["already_erased"]
    assert second["receipt_id"] == first["receipt_id"]
    receipts = json.loads(run(url, "erasures", "--json").stdout)
    assert [r["customer_id"] for r in receipts] == [TARGET]
    assert set(receipts[0]) >= {"erased_at", "by", "reason", "destroyed", "receipt_id"}
    assert "@" not in json.dumps(receipts[0]["destroyed"])
    history = run(url, "history", TARGET).stdout
    assert "personal=<erased>" in history
    assert "forgotten" in history
    assert "liskov" not in history.lower()
    view = json.loads(run(url, "customer", TARGET, "--as-of", AS_OF, "--json").stdout)
    assert view["customer_id"] == TARGET
    assert run(url, "verify", "--history", check=False).returncode in {0, 1}
    verified = json.loads(run(url, "verify", "--history", "--json", check=False).stdout)
    assert verified["history"]["breaks"] == []


def test_the_dlq_gets_a_tombstone_and_a_resend_after_a_wipe_carries_no_personal_data(
    fresh_database_url: str, make_store: StoreFactory, broker: EmbeddedBroker
) -> None:
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=dict.fromkeys(names.all(), 1))
    store = make_store(fresh_database_url)
    store.record(
        [
            Item(bad_line(TARGET, 1)),
            Item(bad_line(OTHER, 1)),
            Item({k: v for k, v in bad_line(TARGET, 2).items() if k != "currency"}),  # valid
        ]
    )

    def relay(dlq_topic: str, incarnation: str) -> None:
        running = Relay(
            store,
            producer(broker.bootstrap),
            events_topic=names.customer_events,
            dlq_topic=dlq_topic,
            conninfo=fresh_database_url,
            dlq_incarnation=incarnation,
            events_incarnation=incarnation,
        )
        running.publish_dead_letters()
        while running.publish_events():
            pass

    relay(names.interactions_dlq, "first")
    client = producer(broker.bootstrap)

    def publish(customer_id: str) -> None:
        client.send(names.interactions_dlq, key=customer_id.encode(), value=None)
        client.flush()

    Eraser(store, clock=store.clock).forget(
        TARGET, by="dpo", reason="art. 17", tombstones=Tombstones([names.interactions_dlq], publish)
    )
    first = list(read_topic(broker.bootstrap, names.interactions_dlq))
    assert [r.key for r in first if r.value is None] == [TARGET.encode()]
    # The broker lost its data: a new DLQ incarnation gets every dead letter again.
    wiped = f"{names.prefix}interactions.dlq.after-wipe"
    ensure_topics(broker.bootstrap, [wiped], partitions=1)
    relay(wiped, "second")
    resent = [json.loads(r.value) for r in read_topic(broker.bootstrap, wiped)]
    assert sorted(m["customer_id"] for m in resent) == sorted([TARGET, OTHER])
    target = next(m for m in resent if m["customer_id"] == TARGET)
    assert target["erased"]
    assert target["original"] == ""
    assert secret_of(TARGET) not in json.dumps(target)
    other = next(m for m in resent if m["customer_id"] == OTHER)
    assert not other["erased"]
    assert other["original"]
    # customer-events, the other keyed topic the relay writes, never carried any of it;
    # its re-publication after the erasure carries the Forgotten event, and no plaintext.
    events = [r.value for r in read_topic(broker.bootstrap, names.customer_events)]
    assert any(b'"type":"Forgotten"' in v for v in events)
    assert not [v for v in events if secret_of(TARGET).encode() in v]


def load_policy_default() -> Any:
    from infra.bootstrap import default_policy_text  # noqa: PLC0415

    return load_policy(default_policy_text())


def _at(text: str) -> Any:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(text)
