"""The whole pipeline, end to end: Kafka → ingest → store → relay → faust projector →
read models and change topics, all roles run by `infra.serve` against a real broker
and a real PostgreSQL. The oracle (RELIABILITY): nothing lost or duplicated, every
message applied or dead-lettered, live read models equal a fresh replay of the store
(invariant 3), and the published alerts agree with the read models.
"""

from __future__ import annotations

import threading
import time
import uuid
from base64 import b64decode
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from kafka import KafkaAdminClient

from adapters.checker import Broker, verify
from adapters.crypto import MasterKey
from adapters.ingest import position_name
from adapters.readmodels import ReadModel, ReadModelStore, audit
from adapters.readside import ProjectionReader
from adapters.relay import DLQ_POSITION
from adapters.relay import position_name as relay_position
from adapters.simulate import simulate
from adapters.store import CustomerStore
from adapters.topics import TopicNames, TopicWatch, ensure_topics, incarnation_of
from infra.bootstrap import Root, load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import producer
from infra.serve import Pipeline, Tuning, run_roles
from projections import Policy
from tests.conftest import TEST_MASTER_KEY, StoreFactory, app_root, settings_for
from tests.integration.test_ingest_relay import read_all

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 1, tzinfo=UTC)
"""The simulation's fixed "now": in the past, so timers have deadlines to fire."""

BAD: list[tuple[bytes, bytes]] = [
    (b"bad-1", b"{broken"),
    (b"bad-2", b'{"kind": "purchase"}'),
    (b"bad-3", b"\xff\xfe not utf-8"),
    (
        b"bad-4",
        orjson.dumps(
            {
                "event_id": "bad-4",
                "source": "shop",
                "customer_id": "bad-4",
                "kind": "teleported",
                "occurred_at": "2026-10-01T10:00:00Z",
            }
        ),
    ),
]


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.25
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of a topic, in per-partition order. Read until a quiet second (as
    `read_all` does): Tansu's end offsets name the start of the last record batch, not
    the log end (docs/streams-notes.md), so they cannot say when the end is reached."""
    records = read_all(bootstrap, topic, partitions, idle=1.0)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def last_dead_letter_id(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(id) FROM dead_letters").fetchone()
    return None if row is None else row[0]


def assert_live_equals_replay(
    read_models: ReadModelStore, store: CustomerStore, policy: Policy
) -> None:
    """RELIABILITY G6 and G14: every stored customer has one read model, at its latest
    version, equal to a fresh replay, and there is no other row."""
    found = audit(read_models, store, policy)
    assert (found.missing, found.extra, found.stale, found.ahead) == ([], [], [], [])
    assert found.differences == []


def conflicting(item: dict[str, Any]) -> dict[str, Any]:
    """The same interaction key with another payload (a minute earlier)."""
    earlier = datetime.fromisoformat(item["occurred_at"]) - timedelta(minutes=1)
    return {**item, "occurred_at": earlier.isoformat()}


def dead_letter_ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM dead_letters ORDER BY id")]


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_the_pipeline_applies_every_interaction_once_and_live_equals_replay(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    started = time.monotonic()
    prefix = f"p{uuid.uuid4().hex[:8]}."
    names = TopicNames(prefix=prefix)
    counts = names.partitions()
    ensure_topics(broker.bootstrap, names.all(), partitions=counts)
    watch = TopicWatch(broker.bootstrap, names.all())
    incarnations = {name: incarnation_of(topic_id) for name, topic_id in watch.ids().items()}
    watch.close()
    assert all(incarnations.values()), "the broker reports topic ids"
    dlq_position = relay_position(DLQ_POSITION, incarnations[names.interactions_dlq])
    store: CustomerStore = make_store(fresh_database_url)
    settings = settings_for(fresh_database_url, topic_prefix=prefix)
    assert settings.master_key is not None
    read_models = ReadModelStore(store)

    simulation = simulate(customers=60, seed=23, end=END)
    interactions = simulation.interactions
    unique = {(i["source"], i["event_id"]): i for i in interactions}
    per_customer = Counter(i["customer_id"] for i in unique.values())
    # Same (source, event_id) as the first interaction, another payload: the store
    # finds the conflict at write time, and it too must reach the DLQ topic.
    conflict = conflicting(interactions[0])
    published = len(interactions) + len(BAD) + 1

    stop = threading.Event()
    serving = threading.Thread(
        target=run_roles,
        args=(
            app_root(settings, fresh_database_url),
            {"ingest", "relay", "project"},
            stop,
        ),
        kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast()},
        name="pipeline",
        daemon=True,
    )
    serving.start()
    try:
        client = producer(broker.bootstrap)
        for i, item in enumerate(interactions):
            client.send(
                names.interactions, key=item["customer_id"].encode(), value=orjson.dumps(item)
            )
            if i == len(interactions) // 2:
                for key, value in BAD:  # bad input in the middle of the stream
                    client.send(names.interactions, key=key, value=value)
                client.send(
                    names.interactions,
                    key=conflict["customer_id"].encode(),
                    value=orjson.dumps(conflict),
                )
        client.flush()
        client.close()

        wait_until(
            lambda: (
                count(fresh_database_url, "interaction_keys") == len(unique)
                and count(fresh_database_url, "dead_letters") == len(BAD) + 1
            ),
            timeout=30,
            what="every interaction stored or dead-lettered",
        )

        def caught_up() -> bool:
            for customer_id, expected in per_customer.items():
                model = read_models.get(customer_id)
                if model is None or model.applied_version != expected + 1:
                    return False
            # The timer fired for every deadline already past, and the relay sent
            # the dead letters on.
            overdue = read_models.due(datetime.now(UTC) - timedelta(seconds=3))
            return not overdue and store.position(dlq_position) == last_dead_letter_id(
                fresh_database_url
            )

        wait_until(caught_up, timeout=30, what="read models at the stored versions")
    finally:
        stop.set()
        serving.join(timeout=30)
    assert not serving.is_alive(), "the roles did not stop"

    # Every message consumed, and accounted for exactly once: applied (duplicates as
    # no-ops) or dead-lettered.
    consumed = sum(
        position + 1
        for p in range(counts[names.interactions])
        if (
            position := store.position(
                position_name(names.interactions, p, incarnations[names.interactions])
            )
        )
        is not None
    )
    assert consumed == published
    stored_keys = count(fresh_database_url, "interaction_keys")
    dead = count(fresh_database_url, "dead_letters")
    duplicates = len(interactions) - len(unique)
    assert duplicates > 0  # the simulation retries some sends: they must be no-ops
    assert stored_keys + duplicates + dead == published
    assert dead == len(BAD) + 1

    # The store: versions 1..n per customer, one event per unique interaction + Created.
    for customer_id, expected in per_customer.items():
        versions = [version for version, _, _ in store.stored_events(customer_id)]
        assert versions == list(range(1, expected + 2)), customer_id

    # Live equals replay, at each read model's own evaluation time.
    reader = ProjectionReader(store, load_configured_policy(settings))
    models: dict[str, ReadModel] = {m.customer_id: m for m in read_models.all()}
    assert set(models) == set(per_customer)
    for customer_id, model in models.items():
        assert model.evaluated_at is not None
        replayed = reader.customer(customer_id, as_of=model.evaluated_at)
        live = (
            model.tier,
            model.lifecycle_stage,
            model.churn_score,
            model.churn_level,
            model.alert_state,
            model.alert_id,
        )
        fresh = (
            replayed.tier,
            replayed.lifecycle_stage,
            replayed.churn_score,
            replayed.churn_level,
            replayed.alert_state,
            replayed.alert_id,
        )
        assert live == fresh, customer_id
    # The timers ran: the simulation ended weeks before the wall clock.
    assert any(m.evaluated_at is not None and m.evaluated_at > END for m in models.values())

    # The alerts published agree with the read models: the last alert change of each
    # customer (per-key order holds within a partition) is its current alert.
    alerts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_topic(broker.bootstrap, names.churn_alerts, counts[names.churn_alerts]):
        change = orjson.loads(record.value)
        assert record.key.decode() == change["customer_id"]
        assert change["kind"] == "alert"
        alerts[change["customer_id"]].append(change)
    assert set(alerts) <= set(models)
    for customer_id, model in models.items():
        published_alerts = alerts.get(customer_id, [])
        if not published_alerts:
            assert (model.alert_state, model.alert_id) == ("none", None), customer_id
            continue
        last = published_alerts[-1]
        assert last["to_value"] == model.alert_state, customer_id
        assert model.alert_id is None or last["alert_id"] == model.alert_id, customer_id
    assert any(m.alert_id is not None for m in models.values())

    # Every dead letter reached the DLQ topic, counted by consuming it, each with its
    # reason and where it came from: applied + dead-lettered == published, on the topics.
    letters = [
        orjson.loads(letter.value)
        for letter in read_topic(
            broker.bootstrap, names.interactions_dlq, counts[names.interactions_dlq]
        )
    ]
    assert sorted(letter["dead_letter_id"] for letter in letters) == dead_letter_ids(
        fresh_database_url
    )
    assert stored_keys + duplicates + len(letters) == published
    assert all(letter["provenance"]["topic"] == names.interactions for letter in letters)
    [clash] = [letter for letter in letters if letter["code"] == "conflicting_duplicate"]
    assert (clash["source"], clash["event_id"]) == (conflict["source"], conflict["event_id"])
    assert orjson.loads(b64decode(clash["original"])) == conflict

    assert time.monotonic() - started < 60

    # The checker agrees, topics included: nothing missing, nothing left behind.
    report = verify(
        store,
        read_models,
        load_configured_policy(settings),
        now=datetime.now(UTC),
        broker=Broker(broker.bootstrap, names),
    )
    assert {kind: c.count for kind, c in report.checks.items() if c.count} == {}
    assert report.topics["dead_letters"]["on_topic"] == len(BAD) + 1
    assert report.topics["ingest"]["consumed"] == report.topics["ingest"]["records"] == published


def test_a_role_that_dies_is_restarted_until_stopped() -> None:
    pipeline = Pipeline(
        Root(
            settings_for("postgresql://unused@127.0.0.1/unused"),
            "",
            MasterKey.from_text(TEST_MASTER_KEY),
        ),
        bootstrap="127.0.0.1:1",
        tuning=Tuning(restart_pause=0.01),
    )
    stop = threading.Event()
    lives: list[int] = []

    def flaky(stop_: threading.Event) -> None:
        lives.append(len(lives) + 1)
        if len(lives) < 3:
            raise RuntimeError("boom")
        stop_.wait()  # the third life runs until stopped

    supervisor = threading.Thread(target=pipeline.supervise, args=("flaky", flaky, stop))
    supervisor.start()
    wait_until(lambda: len(lives) == 3, timeout=10, what="two restarts")
    stop.set()
    supervisor.join(timeout=10)
    assert not supervisor.is_alive()
    assert lives == [1, 2, 3]


def test_re_provisioning_after_a_wipe_replaces_what_clients_re_created_save_interactions(
    fresh_database_url: str,
) -> None:
    """Tansu re-creates a topic with 4 partitions for any client that names it. After a
    wipe the watcher replaces such incarnations of the topics the pipeline rebuilds; it
    keeps `interactions` (upstream's records are in it) and, at a first start, whatever
    an operator created (nothing of the topic was logged yet)."""
    names = TopicNames(prefix=f"p{uuid.uuid4().hex[:8]}.")
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    wanted = names.partitions()

    def touch(bootstrap: str, *topics: str) -> None:
        client = producer(bootstrap)
        try:
            for topic in topics:
                client.send(topic, key=b"k", value=b"{}").get(timeout=10)
        finally:
            client.close(timeout=5)

    with embedded_broker() as own:
        pipeline = Pipeline(
            Root(
                settings,
                fresh_database_url,
                MasterKey.from_text(TEST_MASTER_KEY),
                as_role=settings.app_role,
            ),
            bootstrap=own.bootstrap,
            tuning=Tuning.fast(),
        )
        touch(own.bootstrap, names.tier_changes)  # an operator's, before the first start
        watch = TopicWatch(own.bootstrap, names.all())
        try:
            pipeline._provision(watch)
            first = pipeline.topic_ids
            assert partitions_of(own.bootstrap, names.tier_changes) == 4, "kept at first"

            own.restart()
            touch(own.bootstrap, names.interactions, names.customer_events, names.churn_alerts)
            auto = watch.ids()
            assert pipeline.watch(watch), "the reset is found"
        finally:
            watch.close()
        after = pipeline.topic_ids
        counts = {name: partitions_of(own.bootstrap, name) for name in names.all()}

    assert all(after[name] != first[name] for name in names.all()), "new incarnations"
    assert after[names.interactions] == auto[names.interactions], "upstream's, kept"
    assert counts[names.interactions] == 4
    for name in (names.customer_events, names.churn_alerts):
        assert after[name] != auto[name], f"{name}: the auto-created one was replaced"
    assert {name: counts[name] for name in names.rebuilt()} == {
        name: wanted[name] for name in names.rebuilt()
    }
    with psycopg.connect(fresh_database_url) as conn:
        logged = {
            row[0]
            for row in conn.execute(
                "SELECT incarnation FROM topic_incarnations WHERE topic = %s",
                (names.customer_events,),
            )
        }
    assert logged == {first[names.customer_events], after[names.customer_events]}


def partitions_of(bootstrap: str, topic: str) -> int:
    watch = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (described,) = watch.describe_topics([topic])
    finally:
        watch.close()
    return len(described.get("partitions") or ())
