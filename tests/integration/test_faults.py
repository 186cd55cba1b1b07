"""The fault suite of RELIABILITY: the pipeline against a real PostgreSQL and a real
(embedded Tansu) broker, with the faults made real — the broker restarted with empty
storage under running clients, the ingest process killed with SIGKILL mid-stream.

The oracle is the same every time: every published interaction is stored exactly once
(or dead-lettered), versions are contiguous, and the read models equal a replay.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from adapters.crypto import MasterKey
from adapters.ingest import position_name
from adapters.readmodels import ReadModelStore
from adapters.readside import ProjectionReader
from adapters.simulate import simulate
from adapters.store import CustomerStore
from adapters.topics import TopicNames, TopicWatch, ensure_topics, incarnation_of
from infra.bootstrap import load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import producer
from infra.serve import STOP_TIMEOUT, Tuning, partition_of, run_role_processes, run_roles
from projections import Change, replay
from tests.conftest import StoreFactory, settings_for
from tests.integration.test_pipeline import (
    BAD,
    assert_live_equals_replay,
    count,
    read_topic,
    wait_until,
)
from tests.integration.test_store import purchase

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own: these tests wipe it."""
    with embedded_broker() as running:
        yield running


def publish(bootstrap: str, topic: str, items: Sequence[dict[str, Any]]) -> None:
    client = producer(bootstrap)
    try:
        for item in items:
            client.send(topic, key=item["customer_id"].encode(), value=orjson.dumps(item))
        client.flush()
    finally:
        client.close()


def assert_stored_once(store: CustomerStore, url: str, items: list[dict[str, Any]]) -> None:
    """Every distinct interaction stored exactly once, versions 1..n per customer."""
    unique = {(i["source"], i["event_id"]): i for i in items}
    per_customer = distinct_per_customer(items)
    assert count(url, "interaction_keys") == len(unique)
    assert count(url, "customer_events") == len(unique) + len(per_customer)
    for customer_id, expected in per_customer.items():
        versions = [version for version, _, _ in store.stored_events(customer_id)]
        assert versions == list(range(1, expected + 2)), customer_id


def distinct_per_customer(items: Sequence[dict[str, Any]]) -> Counter[str]:
    """How many distinct interactions (by `(source, event_id)`) each customer has."""
    unique = {(i["source"], i["event_id"]): i["customer_id"] for i in items}
    return Counter(unique.values())


def consumed(store: CustomerStore, bootstrap: str, names: TopicNames) -> int:
    """Offsets of the current `interactions` incarnation the ingest has applied."""
    topic = names.interactions
    watch = TopicWatch(bootstrap, [topic])
    try:
        incarnation = incarnation_of(watch.ids()[topic])
    finally:
        watch.close()
    positions = (
        store.position(position_name(topic, p, incarnation))
        for p in range(names.partitions()[topic])
    )
    return sum(position + 1 for position in positions if position is not None)


def caught_up(read_models: ReadModelStore, per_customer: Counter[str]) -> bool:
    for customer_id, expected in per_customer.items():
        model = read_models.get(customer_id)
        if model is None or model.applied_version != expected + 1:
            return False
    return True


def test_the_pipeline_recovers_by_itself_when_the_broker_restarts_empty(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    names = TopicNames(prefix=f"w{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    watch = TopicWatch(broker.bootstrap, names.all())
    before = watch.ids()
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    assert settings.master_key is not None
    store = make_store(fresh_database_url)
    read_models = ReadModelStore(store)

    interactions = simulate(customers=80, seed=31, end=END).interactions
    half = len(interactions) // 2
    first, second = interactions[:half], interactions[half:]
    unique = {(i["source"], i["event_id"]): i for i in interactions}
    per_customer = distinct_per_customer(interactions)

    stop = threading.Event()
    serving = threading.Thread(
        # Each role in a process of its own, as `eventcrm serve` runs them: a faust app
        # that cannot stop after the reset is abandoned and its process ended.
        target=run_role_processes,
        args=(settings, {"ingest", "relay", "project"}, stop),
        kwargs={
            "bootstrap": broker.bootstrap,
            "app_url": fresh_database_url,
            "master_key": MasterKey.from_text(settings.master_key),
            "as_role": settings.app_role,
            "tuning": Tuning.fast(),
        },
        daemon=True,
    )
    serving.start()
    try:
        publish(broker.bootstrap, names.interactions, first)
        # Mid-stream: part of the first half is stored, and projected, when the broker
        # loses everything (topics, records, offsets, groups, producer ids).
        wait_until(
            lambda: count(fresh_database_url, "read_models") >= 10,
            timeout=30,
            what="the pipeline to be under way",
        )
        broker.restart()
        # Kafka is disposable, not the source of truth: what it held and nobody had
        # stored yet is gone, so upstream publishes again (the store ignores repeats),
        # then the stream goes on.
        publish(broker.bootstrap, names.interactions, first + second)

        wait_until(
            lambda: count(fresh_database_url, "interaction_keys") == len(unique),
            timeout=60,
            what="every interaction stored after the broker reset",
        )
        wait_until(
            lambda: caught_up(read_models, per_customer),
            timeout=60,
            what="the read models to catch up after the broker reset",
        )
    finally:
        stop.set()
        serving.join(timeout=STOP_TIMEOUT + 20)  # a role may need all of it
    assert not serving.is_alive(), "the roles did not stop"

    after = watch.ids()
    watch.close()
    assert all(after.values()), "every topic was re-provisioned"
    assert all(after[name] != before[name] for name in names.all()), "new incarnations"
    assert consumed(store, broker.bootstrap, names) > 0, "ingest went on, on the new topic"

    assert_stored_once(store, fresh_database_url, interactions)
    policy = load_configured_policy(settings)
    assert_live_equals_replay(read_models, store, policy)


def serve_role(
    role: str, url: str, broker: EmbeddedBroker, prefix: str, *, batch_size: int = 500
) -> subprocess.Popen[bytes]:
    """`eventcrm serve --role ROLE` as its own process, as production runs it; its log
    goes to a temporary file (a pipe nobody reads could fill up and block it)."""
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(url, user="eventcrm_app"),
        "EVENTCRM_MASTER_KEY": settings_for(url).master_key or "",
        # the policy the tests replay with (settings_for's alerting test policy)
        "EVENTCRM_POLICY": str(settings_for(url).policy),
        "EVENTCRM_KAFKA_BOOTSTRAP": broker.bootstrap,
        "EVENTCRM_TOPIC_PREFIX": prefix,
        "EVENTCRM_KAFKA_SESSION_TIMEOUT_SECONDS": "2",
        "EVENTCRM_RECORD_BATCH_SIZE": str(batch_size),
    }
    command = [str(Path(sys.executable).parent / "eventcrm"), "serve", "--role", role]
    log = tempfile.TemporaryFile(prefix=f"eventcrm-{role}-")  # noqa: SIM115 - closed by stop_role
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    _LOGS[process.pid] = log
    return process


_LOGS: dict[int, IO[bytes]] = {}
"""The log file of each process `serve_role` started, by pid."""


def serve_ingest(
    url: str, broker: EmbeddedBroker, prefix: str, batch_size: int
) -> subprocess.Popen[bytes]:
    return serve_role("ingest", url, broker, prefix, batch_size=batch_size)


def stop_role(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM, wait (SIGKILL after 30 s); returns the end of its log for messages."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log = _LOGS.pop(process.pid, None)
    if log is None:
        return ""
    with log:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]


def test_killing_the_ingest_process_mid_stream_loses_and_doubles_nothing(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    names = TopicNames(prefix=f"k{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    store = make_store(fresh_database_url)
    interactions = simulate(customers=400, seed=37, end=END).interactions
    unique = {(i["source"], i["event_id"]) for i in interactions}
    publish(broker.bootstrap, names.interactions, interactions)

    rng = random.Random(5)
    kills = 0
    process = serve_ingest(fresh_database_url, broker, names.prefix, batch_size=100)
    try:
        # Three SIGKILLs at random moments while batches are being recorded: a kill
        # inside a transaction rolls it back (events, keys and position together).
        for fraction in sorted(rng.uniform(0.15, 0.75) for _ in range(3)):
            target = int(len(unique) * fraction)

            def stored(target: int = target) -> bool:
                return count(fresh_database_url, "interaction_keys") >= target

            wait_until(
                stored,
                timeout=60,
                what=f"{target} interactions stored before kill {kills + 1}",
                poll=0.01,
            )
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            assert count(fresh_database_url, "interaction_keys") < len(unique), "killed too late"
            process = serve_ingest(fresh_database_url, broker, names.prefix, batch_size=100)
        wait_until(
            lambda: count(fresh_database_url, "interaction_keys") == len(unique),
            timeout=60,
            what="every interaction stored after the restarts",
        )
    finally:
        log = stop_role(process)
    assert process.returncode == 0, log
    assert kills == 3

    assert_stored_once(store, fresh_database_url, interactions)
    assert consumed(store, broker.bootstrap, names) == len(interactions), "each offset once"


def test_a_full_redelivery_changes_neither_the_store_nor_the_read_models(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    names = TopicNames(prefix=f"r{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    assert settings.master_key is not None
    store = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    interactions = simulate(customers=40, seed=43, end=END).interactions
    unique = {(i["source"], i["event_id"]): i for i in interactions}
    per_customer = distinct_per_customer(interactions)
    now = datetime(2026, 11, 20, tzinfo=UTC)  # one clock for both runs: ticks agree

    def serve(group_prefix: str) -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        thread = threading.Thread(
            target=run_roles,
            args=(settings, {"ingest", "relay", "project"}, stop),
            kwargs={
                "bootstrap": broker.bootstrap,
                "app_url": fresh_database_url,
                "master_key": MasterKey.from_text(settings.master_key or ""),
                "as_role": settings.app_role,
                "tuning": Tuning.fast(group_prefix=group_prefix, clock=lambda: now),
            },
            daemon=True,
        )
        thread.start()
        return stop, thread

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(fresh_database_url) as conn:
            return conn.execute("SELECT * FROM read_models ORDER BY customer_id").fetchall()

    stop, thread = serve("first")
    try:
        publish(broker.bootstrap, names.interactions, interactions)
        wait_until(
            lambda: caught_up(read_models, per_customer) and not read_models.due(now),
            timeout=60,
            what="the first pass, every timer due at `now` fired",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    before = rows()
    events = count(fresh_database_url, "customer_events")

    # Everything again: upstream re-publishes every interaction, and a projector group
    # with no committed offsets reads `customer-events` from the beginning.
    stop, thread = serve("again")
    try:
        publish(broker.bootstrap, names.interactions, interactions)

        wait_until(
            lambda: consumed(store, broker.bootstrap, names) == 2 * len(interactions),
            timeout=60,
            what="the redelivered interactions consumed",
        )
        # One new customer per partition of customer-events, published after the
        # redelivery: per-partition order means that once all of them are projected,
        # the new group has read everything before them.
        partitions = names.partitions()[names.customer_events]
        sentinels: dict[int, str] = {}
        for n in range(10_000):
            sentinels.setdefault(
                partition_of(f"sentinel-{n}".encode(), partitions), f"sentinel-{n}"
            )
        publish(
            broker.bootstrap,
            names.interactions,
            [purchase(customer, f"{customer}-1") for customer in sentinels.values()],
        )
        wait_until(
            lambda: all(read_models.get(customer) for customer in sentinels.values()),
            timeout=60,
            what="the new projector group to read customer-events to its end",
        )
        # ...and it did read the old events (from the beginning), not just the new ones.
        incarnation = incarnation_of(
            TopicWatch(broker.bootstrap, [names.customer_events]).ids()[names.customer_events]
        )
        wait_until(
            lambda: (
                committed(broker, f"again-projector-{incarnation}")
                > committed(broker, f"first-projector-{incarnation}")
            ),
            timeout=30,
            what="the new group's committed offsets to pass the first group's",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert count(fresh_database_url, "customer_events") == events + 2 * len(sentinels)
    assert count(fresh_database_url, "interaction_keys") == len(unique) + len(sentinels)
    after = [row for row in rows() if not str(row[0]).startswith("sentinel-")]
    # No read model written again, updated_at included (shows the columns that differ).
    for old, new in zip(before, after, strict=True):
        assert old == new, [
            (n, a, b) for n, (a, b) in enumerate(zip(old, new, strict=True)) if a != b
        ]


def committed(broker: EmbeddedBroker, group: str) -> int:
    """The sum of a consumer group's committed offsets (0: none)."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(offset.offset for offset in offsets.values())


def test_killing_every_role_at_random_and_cutting_the_listen_connection_loses_nothing(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """RELIABILITY's fault suite in small: ingest, relay and projector as processes,
    each killed with SIGKILL at random moments (and restarted) while a stream with bad
    records in it is published, and the relay's LISTEN connection terminated."""
    names = TopicNames(prefix=f"c{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    store = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    interactions = simulate(customers=300, seed=53, end=END).interactions
    unique = {(i["source"], i["event_id"]) for i in interactions}
    per_customer = distinct_per_customer(interactions)
    roles = {
        role: serve_role(role, fresh_database_url, broker, names.prefix, batch_size=100)
        for role in ("ingest", "relay", "project")
    }
    rng = random.Random(11)
    kills: Counter[str] = Counter()
    chunks = [interactions[n : n + 500] for n in range(0, len(interactions), 500)]
    try:
        client = producer(broker.bootstrap)
        for n, chunk in enumerate(chunks):
            for item in chunk:
                client.send(
                    names.interactions, key=item["customer_id"].encode(), value=orjson.dumps(item)
                )
            if n == len(chunks) // 2:
                for key, value in BAD:
                    client.send(names.interactions, key=key, value=value)
            client.flush()
            time.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(sorted(roles))
            roles[victim].send_signal(signal.SIGKILL)
            roles[victim].wait(timeout=10)
            kills[victim] += 1
            roles[victim] = serve_role(
                victim, fresh_database_url, broker, names.prefix, batch_size=100
            )
            if n == len(chunks) // 3:
                cut_listen_connection(fresh_database_url)
        client.close()

        wait_until(
            lambda: (
                count(fresh_database_url, "interaction_keys") == len(unique)
                and count(fresh_database_url, "dead_letters") == len(BAD)
            ),
            timeout=90,
            what="every interaction stored or dead-lettered despite the kills",
        )
        wait_until(
            lambda: caught_up(read_models, per_customer),
            timeout=90,
            what="the read models to catch up despite the kills",
        )
    finally:
        logs = {role: stop_role(process) for role, process in roles.items()}
    for role, process in roles.items():
        assert process.returncode == 0, (role, logs[role])
    assert sum(kills.values()) == len(chunks)
    assert len(kills) == 3, f"every role was killed at least once: {dict(kills)}"

    assert_stored_once(store, fresh_database_url, interactions)
    policy = load_configured_policy(settings_for(fresh_database_url))
    assert_live_equals_replay(read_models, store, policy)


def cut_listen_connection(url: str) -> None:
    """Terminate the relay's LISTEN connection (the one holding its advisory lock)."""
    query = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(
            lambda: bool(conn.execute(query).fetchall()),
            timeout=30,
            what="the relay's LISTEN connection, to terminate it",
        )


def test_a_paused_projector_zombie_cannot_regress_the_read_models(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """Two projector processes; one is frozen (SIGSTOP) past its session timeout while
    the stream goes on, so the other takes over its partitions, then thawed (SIGCONT):
    whatever the zombie still writes or publishes late must be rejected or harmless."""
    names = TopicNames(prefix=f"z{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    store = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    interactions = simulate(customers=200, seed=59, end=END).interactions
    per_customer = distinct_per_customer(interactions)
    third = len(interactions) // 3
    url = fresh_database_url
    roles = {
        name: serve_role(role, url, broker, names.prefix, batch_size=100)
        for name, role in (
            ("ingest", "ingest"),
            ("relay", "relay"),
            ("zombie", "project"),
            ("survivor", "project"),
        )
    }
    try:
        publish(broker.bootstrap, names.interactions, interactions[:third])
        wait_until(
            lambda: count(url, "read_models") >= 50, timeout=60, what="both projectors at work"
        )
        roles["zombie"].send_signal(signal.SIGSTOP)
        publish(broker.bootstrap, names.interactions, interactions[third : 2 * third])
        time.sleep(5)  # > the 2 s session timeout: the survivor takes every partition
        roles["zombie"].send_signal(signal.SIGCONT)
        publish(broker.bootstrap, names.interactions, interactions[2 * third :])
        wait_until(
            lambda: caught_up(read_models, per_customer),
            timeout=90,
            what="the read models to catch up after the zombie came back",
        )
        time.sleep(3)  # let the zombie's late writes, if any, land
    finally:
        logs = {name: stop_role(process) for name, process in roles.items()}
    for name, process in roles.items():
        assert process.returncode == 0, (name, logs[name])

    assert caught_up(read_models, per_customer), "no read model moved back"
    assert_stored_once(store, url, interactions)
    policy = load_configured_policy(settings_for(url))
    assert_live_equals_replay(read_models, store, policy)


def test_a_database_outage_pauses_the_ingest_and_it_resumes_without_loss(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """The database refuses connections for a few seconds, its sessions cut, while the
    ingest process records a stream: it must pause, retry and lose nothing."""
    names = TopicNames(prefix=f"o{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    interactions = simulate(customers=300, seed=61, end=END).interactions
    unique = {(i["source"], i["event_id"]) for i in interactions}
    publish(broker.bootstrap, names.interactions, interactions)
    database = psycopg.conninfo.conninfo_to_dict(fresh_database_url)["dbname"]
    admin = psycopg.conninfo.make_conninfo(fresh_database_url, dbname="postgres")

    process = serve_ingest(fresh_database_url, broker, names.prefix, batch_size=50)
    stack = contextlib.ExitStack()
    try:
        wait_until(
            lambda: count(fresh_database_url, "interaction_keys") >= len(unique) // 4,
            timeout=60,
            what="the ingest under way",
            poll=0.01,
        )
        monitor = stack.enter_context(psycopg.connect(fresh_database_url, autocommit=True))
        before_outage = count(fresh_database_url, "interaction_keys")
        assert before_outage < len(unique), "the outage hits mid-stream"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            cut = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = 'eventcrm_app'",
                (database,),
            ).fetchall()
            assert cut, "the ingest's sessions were cut"
            # The outage: the application cannot connect. A session opened before it
            # (the owner's, not cut) watches that nothing is recorded meanwhile.
            at_start = monitor.execute("SELECT count(*) FROM interaction_keys").fetchone()
            time.sleep(4)
            at_end = monitor.execute("SELECT count(*) FROM interaction_keys").fetchone()
            assert at_start == at_end, "the ingest paused during the outage"
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        wait_until(
            lambda: count(fresh_database_url, "interaction_keys") == len(unique),
            timeout=60,
            what="every interaction stored after the outage",
        )
    finally:
        stack.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        log = stop_role(process)
    assert process.returncode == 0, log
    assert_stored_once(make_store(fresh_database_url), fresh_database_url, interactions)


def read_some(bootstrap: str, topic: str, at_least: int, *, timeout: float = 60) -> list[Any]:
    """A subscriber that reads a topic from the beginning, then stops once it has read
    ``at_least`` records: it is mid-stream, the rest is not consumed."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < at_least:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(records)} records on {topic} after {timeout:.0f}s")
            for batch in reader.poll(timeout_ms=200, max_records=1).values():
                records.extend(batch)
        return records
    finally:
        reader.close()


def test_after_a_broker_wipe_a_subscriber_that_was_mid_stream_ends_with_every_alert(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """Alerts published but not yet consumed when the broker loses its data: the relay
    re-announces them on the new incarnation (ADR 15), so a subscriber that resumes
    there from the beginning and deduplicates by ``change_id`` misses none."""
    names = TopicNames(prefix=f"a{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    assert settings.master_key is not None
    url = fresh_database_url
    store = make_store(url)
    read_models = ReadModelStore(store)
    interactions = simulate(customers=80, seed=71, end=END).interactions
    unique = {(i["source"], i["event_id"]) for i in interactions}
    per_customer = distinct_per_customer(interactions)

    stop = threading.Event()
    serving = threading.Thread(
        target=run_role_processes,
        args=(settings, {"ingest", "relay", "project"}, stop),
        kwargs={
            "bootstrap": broker.bootstrap,
            "app_url": url,
            "master_key": MasterKey.from_text(settings.master_key),
            "as_role": settings.app_role,
            "tuning": Tuning.fast(),
        },
        daemon=True,
    )
    serving.start()
    try:
        publish(broker.bootstrap, names.interactions, interactions)
        before = read_some(broker.bootstrap, names.churn_alerts, 5)
        # More alerts are published that the subscriber has not read, then the broker
        # loses everything.
        wait_until(
            lambda: len(read_topic(broker.bootstrap, names.churn_alerts, 3)) > len(before) + 5,
            timeout=60,
            what="alerts published that the subscriber has not consumed",
            poll=0.5,
        )
        broker.restart()
        publish(broker.bootstrap, names.interactions, interactions)  # upstream again

        def settled() -> bool:
            with psycopg.connect(url) as conn:
                pending = conn.execute(
                    "SELECT count(*) FROM topic_incarnations WHERE announced_at IS NULL "
                    "AND topic = ANY(%s)",
                    (list(names.changes()),),
                ).fetchone()
            return (
                count(url, "interaction_keys") == len(unique)
                and caught_up(read_models, per_customer)
                and not read_models.due(datetime.now(UTC) - timedelta(seconds=3))
                and pending == (0,)
            )

        wait_until(settled, timeout=120, what="the pipeline to settle after the wipe")
        after = read_topic(broker.bootstrap, names.churn_alerts, 3)
    finally:
        stop.set()
        serving.join(timeout=STOP_TIMEOUT + 20)  # a role may need all of it
    assert not serving.is_alive(), "the roles did not stop"

    seen = [orjson.loads(record.value) for record in [*before, *after]]
    reannounced = {m["change_id"] for m in seen if m.get("reannounced")}
    live = {m["change_id"] for m in seen if not m.get("reannounced")}
    policy = load_configured_policy(settings)
    reader = ProjectionReader(store, policy)
    expected: dict[str, Change] = {}
    for model in read_models.all():
        assert model.evaluated_at is not None
        events = reader.events(model.customer_id, through_version=model.applied_version)
        for step in replay(model.customer_id, events, policy, as_of=model.evaluated_at):
            expected.update((c.change_id, c) for c in step.changes if c.kind == "alert")
    assert expected, "the stream had alerts"
    missing = set(expected) - live - reannounced
    assert not missing, [expected[i].to_dict() for i in sorted(missing)][:3]
    assert {m["alert_id"] for m in seen} == {c.alert_id for c in expected.values()}
    only_reannounced = set(expected) - live
    assert only_reannounced, "the wipe lost alerts that only the re-announcement brought back"
    read_first = {orjson.loads(record.value)["change_id"] for record in before}
    assert set(expected) - read_first, "the subscriber was mid-stream when the broker was wiped"
