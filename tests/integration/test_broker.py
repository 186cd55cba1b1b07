"""The embedded Tansu broker and topic provisioning against the real thing."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from adapters.relay import deliver
from adapters.topics import TopicNames, ensure_topics
from infra import kafka
from infra.broker import EmbeddedBroker, embedded_broker

pytestmark = pytest.mark.integration

MESSAGES = 1_000
KEYS = 37
DEADLINE_S = 20.0


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


@pytest.fixture
def topics(unique: str) -> TopicNames:
    return TopicNames(prefix=f"test-{unique}.")


def topic_names(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def idempotent_producer(bootstrap: str) -> KafkaProducer:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )
    # kafka-python silently turns idempotence off when other settings conflict.
    assert producer.config["enable_idempotence"] is True
    return producer


def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[int, bytes, bytes]]:
    """Every record of `topic` as (partition, key, value), by hand-assigned partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.partition, r.key, r.value) for r in batch)
        return records
    finally:
        consumer.close()


def test_broker_answers_on_loopback(broker: EmbeddedBroker) -> None:
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.running


def test_keyed_messages_come_back_complete_and_in_per_key_order(
    broker: EmbeddedBroker, topics: TopicNames
) -> None:
    created = ensure_topics(broker.bootstrap, topics.all(), partitions=topics.partitions())
    assert created == set(topics.all())
    producer = idempotent_producer(broker.bootstrap)
    try:
        futures = [
            producer.send(
                topics.interactions,
                key=f"customer-{n % KEYS}".encode(),
                value=f"{n % KEYS}:{n // KEYS}".encode(),
            )
            for n in range(MESSAGES)
        ]
        producer.flush(timeout=DEADLINE_S)
        assert all(future.get(timeout=1).offset >= 0 for future in futures)
    finally:
        producer.close(timeout=5)

    records = read_all(broker.bootstrap, topics.interactions, MESSAGES)

    assert len(records) == MESSAGES
    sequences: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for partition, key, value in records:
        sequences[key].append(int(value.split(b":")[1]))
        partitions[key].add(partition)
    assert len(sequences) == KEYS
    for seq in sequences.values():
        assert seq == list(range(len(seq)))
    assert all(len(used) == 1 for used in partitions.values())
    assert len({p for used in partitions.values() for p in used}) > 1


def test_ensure_topics_is_idempotent(broker: EmbeddedBroker, topics: TopicNames) -> None:
    ensure_topics(broker.bootstrap, topics.all(), partitions=1)

    assert ensure_topics(broker.bootstrap, topics.all(), partitions=3) == frozenset()
    assert set(topics.all()) <= topic_names(broker.bootstrap)


def test_restart_wipes_topics_and_ensure_topics_recreates_them(
    broker: EmbeddedBroker, topics: TopicNames
) -> None:
    ensure_topics(broker.bootstrap, topics.all(), partitions=topics.partitions())
    port = broker.port

    broker.restart()

    assert broker.port == port
    assert not set(topics.all()) & topic_names(broker.bootstrap)
    created = ensure_topics(broker.bootstrap, topics.all(), partitions=topics.partitions())
    assert created == set(topics.all())
    producer = idempotent_producer(broker.bootstrap)
    try:
        producer.send(topics.churn_alerts, key=b"c", value=b"after restart").get(timeout=10)
    finally:
        producer.close(timeout=5)
    records = read_all(broker.bootstrap, topics.churn_alerts, 1)
    assert [(key, value) for _, key, value in records] == [(b"c", b"after restart")]


def describe(bootstrap: str, topic: str) -> tuple[str | None, int]:
    """(topic id, partition count) of ``topic`` now ((None, 0): it does not exist)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    if described.get("error_code"):
        return None, 0
    return str(described["topic_id"]), len(described.get("partitions") or ())


def auto_create(bootstrap: str, topic: str) -> tuple[str | None, int]:
    """What a client does after a wipe: produce to a topic that does not exist, which
    makes Tansu create it with its default count."""
    producer = idempotent_producer(bootstrap)
    try:
        producer.send(topic, key=b"k", value=b"v").get(timeout=10)
    finally:
        producer.close(timeout=5)
    return describe(bootstrap, topic)


def test_ensure_topics_replaces_only_the_auto_created_incarnations_it_is_allowed_to(
    broker: EmbeddedBroker, topics: TopicNames
) -> None:
    kept, replaced = topics.interactions, topics.customer_events
    before = {name: auto_create(broker.bootstrap, name) for name in (kept, replaced)}
    assert {count for _, count in before.values()} == {4}, "Tansu's default count"
    asked: list[tuple[str, str]] = []

    def replace(topic: str, topic_id: str) -> bool:
        asked.append((topic, topic_id))
        return topic == replaced

    created = ensure_topics(
        broker.bootstrap, [kept, replaced], partitions=topics.partitions(), replace=replace
    )

    assert created == {replaced}
    assert describe(broker.bootstrap, kept) == before[kept], "kept as it was"
    topic_id, count = describe(broker.bootstrap, replaced)
    assert count == topics.partitions()[replaced]
    assert topic_id != before[replaced][0], "a new incarnation"
    assert set(asked) == {(name, before[name][0]) for name in (kept, replaced)}
    # Nothing wrong any more: a second pass asks about nothing and replaces nothing.
    asked.clear()
    assert (
        ensure_topics(broker.bootstrap, [replaced], partitions=topics.partitions(), replace=replace)
        == frozenset()
    )
    assert asked == []
    assert describe(broker.bootstrap, replaced) == (topic_id, count)


def test_a_producer_whose_sends_cannot_complete_closes_within_its_timeout(
    broker: EmbeddedBroker, topics: TopicNames
) -> None:
    """kafka-python's own close() flushes first and, with its broker gone, waits forever
    (no timeout) or raises and leaves its I/O thread running (with one)."""
    ensure_topics(broker.bootstrap, [topics.customer_events], partitions=3)
    producer = kafka.producer(broker.bootstrap)
    producer.send(topics.customer_events, key=b"k", value=b"before").get(timeout=10)
    broker.stop()
    pending = [producer.send(topics.customer_events, key=b"k", value=b"never") for _ in range(10)]

    started = time.monotonic()
    kafka.close_producer(producer, timeout=1.0)

    assert time.monotonic() - started < 10
    assert all(future.is_done and future.failed() for future in pending)
    assert not producer._sender.is_alive()


def test_a_delivery_that_cannot_complete_gives_up_once_its_role_stops(
    broker: EmbeddedBroker, topics: TopicNames
) -> None:
    """The relay's `deliver` waits up to 30 s for the broker; after a wipe its role's life
    has ended and waiting only delays the restart on the new incarnation."""
    ensure_topics(broker.bootstrap, [topics.customer_events], partitions=3)
    producer = kafka.producer(broker.bootstrap)
    try:
        producer.send(topics.customer_events, key=b"k", value=b"before").get(timeout=10)
        broker.stop()
        sent = [producer.send(topics.customer_events, key=b"k", value=b"never")]
        stop = threading.Event()
        threading.Timer(1.0, stop.set).start()

        started = time.monotonic()
        with pytest.raises(KafkaTimeoutError):
            deliver(producer, sent, timeout=30, until=stop)

        assert 1.0 <= time.monotonic() - started < 5
    finally:
        kafka.close_producer(producer, timeout=0)
