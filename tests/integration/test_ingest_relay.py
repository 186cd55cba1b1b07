"""Kafka → ingest → store → relay → Kafka, against a real PostgreSQL and a real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from adapters.ingest import Ingest, position_name
from adapters.relay import Relay, RelayLockedError
from adapters.store import CustomerStore, Item
from adapters.topics import TopicNames, ensure_topics
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import consumer, producer
from tests.conftest import StoreFactory

pytestmark = pytest.mark.integration

PII = "Zqxj-Relay-Marker"
SESSION_MS = 2000


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


@pytest.fixture
def topics(broker: EmbeddedBroker) -> TopicNames:
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:8]}.")
    partitions = dict.fromkeys(names.all(), 3)
    ensure_topics(broker.bootstrap, names.all(), partitions=partitions)
    return names


def interaction(n: int, customer: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"e-{n}",
        "source": "shop",
        "customer_id": f"k-{customer}",
        "kind": "purchase",
        "occurred_at": "2025-06-01T10:00:00Z",
        "amount": "12.50",
        "currency": "EUR",
    }
    if n % 10 == 0:
        item = {**item, "kind": "registered", "profile": {"name": PII}}
        del item["amount"], item["currency"]
    return item


def publish(bootstrap: str, topic: str, values: list[bytes], keys: list[str]) -> None:
    client = producer(bootstrap)
    for key, value in zip(keys, values, strict=True):
        client.send(topic, key=key.encode(), value=value)
    client.flush()
    client.close()


def drain(ingest: Ingest, expected: int, timeout: float = 30) -> int:
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < expected and time.monotonic() < deadline:
        seen += ingest.step().records
    return seen


def read_all(bootstrap: str, topic: str, partitions: int = 3, idle: float = 2.0) -> list[Any]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    reader.assign(tps)
    reader.seek_to_beginning(*tps)
    out: list[Any] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle:
        polled = reader.poll(timeout_ms=200)
        for batch in polled.values():
            out.extend(batch)
            quiet_since = time.monotonic()
    reader.close()
    return out


def make_ingest(
    store: CustomerStore, broker: EmbeddedBroker, topics: TopicNames, group: str
) -> Ingest:
    client = consumer(broker.bootstrap, group_id=group, session_timeout_ms=SESSION_MS)
    ingest = Ingest(store, client, topic=topics.interactions, batch_size=200)
    ingest.start()
    return ingest


def test_ingest_records_each_message_once_and_dead_letters_the_bad_ones(
    broker: EmbeddedBroker, topics: TopicNames, fresh_database_url: str, make_store: StoreFactory
) -> None:
    store = make_store(fresh_database_url)
    good = [interaction(n, n % 7) for n in range(300)]
    values = [orjson.dumps(g) for g in good] + [b"{broken", b'{"kind": "purchase"}']
    keys = [g["customer_id"] for g in good] + ["k-1", "k-2"]
    publish(broker.bootstrap, topics.interactions, values, keys)

    ingest = make_ingest(store, broker, topics, "ingest-a")
    assert drain(ingest, len(values)) == len(values)

    with psycopg.connect(fresh_database_url) as conn:
        keys_stored = conn.execute("SELECT count(*) FROM interaction_keys").fetchone()
        letters = conn.execute(
            "SELECT code, provenance->>'topic' FROM dead_letters ORDER BY id"
        ).fetchall()
    assert keys_stored == (300,)
    assert sorted(code for code, _ in letters) == ["malformed_json", "missing_field"]
    assert {topic for _, topic in letters} == {topics.interactions}
    positions = [store.position(position_name(topics.interactions, p)) for p in range(3)]
    assert sum(p + 1 for p in positions if p is not None) == len(values)

    # Redelivery: a new consumer group starts from offset 0 in Kafka, yet seeks to the
    # stored positions, so nothing is applied twice.
    again = make_ingest(store, broker, topics, "ingest-b")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert again.step().records == 0
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM interaction_keys").fetchone() == (300,)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (2,)


def test_the_relay_publishes_every_event_once_in_customer_order_without_personal_data(
    broker: EmbeddedBroker, topics: TopicNames, fresh_database_url: str, make_store: StoreFactory
) -> None:
    store = make_store(fresh_database_url)
    store.record([interaction(n, n % 5) for n in range(120)] + [{"kind": "nonsense"}])  # type: ignore[list-item]
    # A conflicting duplicate, found by the store at write time, with Kafka provenance.
    where = {"topic": topics.interactions, "partition": 2, "offset": 77, "key": "k-1"}
    conflict = store.record([Item({**interaction(1, 1), "amount": "99.00"}, provenance=where)])
    assert conflict[0].code == "conflicting_duplicate"
    relay = Relay(
        store,
        producer(broker.bootstrap),
        events_topic=topics.customer_events,
        dlq_topic=topics.interactions_dlq,
        conninfo=fresh_database_url,
        batch_size=50,
    )
    with relay.leadership():
        with (
            pytest.raises(RelayLockedError),
            Relay(
                store,
                producer(broker.bootstrap),
                events_topic=topics.customer_events,
                dlq_topic=topics.interactions_dlq,
                conninfo=fresh_database_url,
            ).leadership(),
        ):
            pass
        while relay.publish_events():
            pass
        relay.publish_dead_letters()

    messages = read_all(broker.bootstrap, topics.customer_events)
    assert len(messages) == 120 + 5  # the interactions and each customer's creation
    assert all(PII.encode() not in m.value for m in messages)
    by_customer: dict[str, list[int]] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        body = orjson.loads(m.value)
        assert m.key.decode() == body["customer_id"]
        by_customer.setdefault(body["customer_id"], []).append(body["version"])
    assert all(v == sorted(v) and v[0] == 1 for v in by_customer.values())
    positions = sorted(orjson.loads(m.value)["position"] for m in messages)
    assert relay.position() == positions[-1]

    # Every dead letter is relayed, whatever rejected it, saying what it was.
    letters = sorted(
        (
            orjson.loads(m.value)
            for m in read_all(broker.bootstrap, topics.interactions_dlq, partitions=3, idle=1.0)
        ),
        key=lambda m: m["dead_letter_id"],
    )
    assert [(m["code"], m["provenance"]) for m in letters] == [
        ("unknown_kind", None),
        ("conflicting_duplicate", where),
    ]
    assert (letters[1]["source"], letters[1]["event_id"]) == ("shop", "e-1")


def test_after_a_broker_wipe_the_ingest_does_not_re_create_its_topic(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    """A running ingest must leave re-provisioning to the pipeline: a consumer subscribed
    by name made Tansu re-create `interactions` with 4 partitions within a second of the
    wipe (12 wanted), and `ensure_topics` then kept it (docs/faults.md)."""
    store = make_store(fresh_database_url)
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:8]}.")
    with embedded_broker() as own:
        ensure_topics(own.bootstrap, [names.interactions], partitions=12)
        client = consumer(own.bootstrap, group_id="ingest-wipe", session_timeout_ms=SESSION_MS)
        ingest = Ingest(store, client, topic=names.interactions, batch_size=200)
        ingest.start()
        values = [orjson.dumps(interaction(n, n % 5)) for n in range(1, 40)]
        publish(own.bootstrap, names.interactions, values, [f"k-{n % 5}" for n in range(1, 40)])
        assert drain(ingest, len(values)) == len(values), "under way before the wipe"

        own.restart()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ingest.step()  # polls, as the role does until the watcher restarts it
        client.close()
        admin = KafkaAdminClient(bootstrap_servers=own.bootstrap)
        try:
            assert names.interactions not in admin.list_topics()
        finally:
            admin.close()
