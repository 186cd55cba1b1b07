"""The fault suite of RELIABILITY: the pipeline against a real PostgreSQL and a real
(embedded Tansu) broker, with the faults made real — the broker restarted with empty
storage under running clients, the ingest process killed with SIGKILL mid-stream.

The oracle is the same every time: every published interaction is stored exactly once
(or dead-lettered), versions are contiguous, and the read models equal a replay.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from adapters.crypto import MasterKey
from adapters.readmodels import ReadModelStore
from adapters.readside import ProjectionReader
from adapters.simulate import simulate
from adapters.store import CustomerStore
from adapters.topics import (
    TANSU_AUTO_CREATED_PARTITIONS,
    TopicNames,
    TopicWatch,
    ensure_topics,
    incarnation_of,
)
from bench.common import cpu_seconds
from infra.bootstrap import Root, load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from infra.serve import STOP_TIMEOUT, Tuning, partition_of, run_role_processes, run_roles
from projections import Change, replay
from streams.app import ProjectorApp
from tests.conftest import StoreFactory, app_root, settings_for
from tests.faultkit import roles as roles_kit
from tests.faultkit.badrecords import CLASSES, BadRecord, bad_records, mixed
from tests.faultkit.oracle import DONE, Verdict, consumed, judge, partition_count, settled
from tests.faultkit.roles import publish, publish_raw, stop_role, wait_for_progress
from tests.faultkit.switch import Faults
from tests.integration.test_pipeline import (
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

    interactions = simulate(customers=80, seed=31, end=END).interactions
    faults = Faults()
    at_restart: list[int] = []
    half = len(interactions) // 2
    first, second = interactions[:half], interactions[half:]

    stop = threading.Event()
    serving = threading.Thread(
        # Each role in a process of its own, as `eventcrm serve` runs them: a faust app
        # that cannot stop after the reset is abandoned and its process ended.
        target=run_role_processes,
        args=(
            app_root(settings, fresh_database_url),
            {"ingest", "relay", "project"},
            stop,
        ),
        kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast()},
        daemon=True,
    )
    serving.start()
    try:
        publish(broker.bootstrap, names.interactions, first)
        # Mid-stream: part of the first half is stored when the broker loses everything
        # (topics, records, offsets, groups, producer ids); the rest of it is lost.
        first_unique = {(i["source"], i["event_id"]) for i in first}
        wait_for_progress(
            lambda: count(fresh_database_url, "interaction_keys"),
            lambda n: n > 0,
            stall=60,
            what="the pipeline to be under way",
            poll=0.01,
        )
        at_restart.append(count(fresh_database_url, "interaction_keys"))
        wiped = faults.inject("broker wipe", broker.restart)
        # Kafka is disposable, not the source of truth: what it held and nobody had
        # stored yet is gone, so upstream publishes again (the store ignores repeats),
        # then the stream goes on. (Upstream publishes at once: whatever re-creates the
        # topics first, they must end with the partitions configured — save
        # `interactions` when upstream's own publish re-created it; asserted below.)
        publish(broker.bootstrap, names.interactions, first + second)
        upstream_created = topic_id(broker.bootstrap, names.interactions)
        # What the current incarnation of `interactions` received (without the wipe,
        # the first half is on it twice).
        published = len(first) + len(second) + (0 if wiped else len(first))
        progress = settled(
            url=fresh_database_url,
            store=store,
            bootstrap=broker.bootstrap,
            names=names,
            valid=interactions,
            bad_count=0,
            published=published,
        )
        wait_for_progress(progress, lambda p: p == DONE, stall=90, what="the pipeline settled")
    finally:
        stop.set()
        serving.join(timeout=STOP_TIMEOUT + 20)  # a role may need all of it
    assert not serving.is_alive(), "the roles did not stop"

    faults.assert_landed("broker wipe")
    assert at_restart[0] < len(first_unique), "the wipe landed while the first half was stored"
    after = watch.ids()
    watch.close()
    assert all(after.values()), "every topic was re-provisioned"
    assert all(after[name] != before[name] for name in names.all()), "new incarnations"
    counts = {name: partition_count(broker.bootstrap, name) for name in names.all()}
    wanted = names.partitions()
    if counts[names.interactions] != wanted[names.interactions]:
        # The one exception: upstream's publish reached the broker before the pipeline
        # re-provisioned, so Tansu created `interactions` with its default count and
        # upstream's records are in it. Tansu has no CreatePartitions and cannot be told
        # not to auto-create; deleting that incarnation would lose records nobody
        # publishes again. So the pipeline keeps it, and the oracle below proves every
        # record of it consumed (docs/faults.md, ADR 11).
        assert counts[names.interactions] == TANSU_AUTO_CREATED_PARTITIONS, counts
        assert after[names.interactions] == upstream_created, "the one upstream created"
        counts[names.interactions] = wanted[names.interactions]
    assert counts == wanted, "re-provisioned with the partitions configured"
    oracle(
        fresh_database_url,
        store,
        broker,
        names,
        interactions,
        published=published,
    )


def topic_id(bootstrap: str, topic: str) -> str | None:
    """The id of ``topic``'s incarnation now (None: it does not exist)."""
    watch = TopicWatch(bootstrap, [topic])
    try:
        return watch.ids()[topic]
    finally:
        watch.close()


def serve_role(
    role: str, url: str, broker: EmbeddedBroker, prefix: str, *, batch_size: int = 500
) -> subprocess.Popen[bytes]:
    """`eventcrm serve --role ROLE` as its own process (`tests.faultkit.roles`)."""
    return roles_kit.serve_role(role, url, broker.bootstrap, prefix, batch_size=batch_size)


def serve_ingest(
    url: str, broker: EmbeddedBroker, prefix: str, batch_size: int
) -> subprocess.Popen[bytes]:
    return serve_role("ingest", url, broker, prefix, batch_size=batch_size)


def oracle(
    url: str,
    store: CustomerStore,
    broker: EmbeddedBroker,
    names: TopicNames,
    valid: list[dict[str, Any]],
    *,
    published: int,
    bad: Sequence[BadRecord] = (),
    seen_alerts: Sequence[bytes] = (),
    check_read_models: bool = True,
) -> Verdict:
    """The one oracle of the fault suite (`tests.faultkit.oracle.judge`), asserted."""
    verdict = judge(
        url=url,
        store=store,
        policy=load_configured_policy(settings_for(url)),
        bootstrap=broker.bootstrap,
        names=names,
        valid=valid,
        bad=bad,
        published=published,
        seen_alerts=seen_alerts,
        check_read_models=check_read_models,
    )
    verdict.assert_clean()
    return verdict


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
    faults = Faults()
    kills = 0
    process = serve_ingest(fresh_database_url, broker, names.prefix, batch_size=100)
    try:
        # Three SIGKILLs at random moments while batches are being recorded: a kill
        # inside a transaction rolls it back (events, keys and position together).
        for fraction in sorted(rng.uniform(0.15, 0.75) for _ in range(3)):
            target = int(len(unique) * fraction)

            wait_for_progress(
                lambda: count(fresh_database_url, "interaction_keys"),
                lambda n, target=target: n >= target,
                stall=60,
                what=f"{target} interactions stored before kill {kills + 1}",
                poll=0.01,
            )
            if faults.inject("kill ingest", process.kill):
                process.wait(timeout=10)
            kills += 1
            assert count(fresh_database_url, "interaction_keys") < len(unique), "killed too late"
            if process.poll() is not None:
                process = serve_ingest(fresh_database_url, broker, names.prefix, batch_size=100)
        wait_for_progress(
            lambda: count(fresh_database_url, "interaction_keys"),
            lambda n: n == len(unique),
            stall=60,
            what="every interaction stored after the restarts",
        )
    finally:
        log = stop_role(process)
    assert process.returncode == 0, log
    faults.assert_landed("kill ingest", 3)
    oracle(
        fresh_database_url,
        store,
        broker,
        names,
        interactions,
        published=len(interactions),
        check_read_models=False,
    )


def test_a_full_redelivery_changes_neither_the_store_nor_the_read_models(
    broker: EmbeddedBroker,
    fresh_database_url: str,
    make_store: StoreFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults = Faults()
    # Counts the customer events the projectors handle (observation only: the original
    # runs first), so the new group's re-reading of the old events is counted.
    handled: Counter[str] = Counter()
    original_handle = ProjectorApp._handle
    phase = ["first"]

    def counting(self: ProjectorApp, batch: Sequence[bytes]) -> None:
        original_handle(self, batch)
        handled[phase[0]] += len(batch)

    monkeypatch.setattr(ProjectorApp, "_handle", counting)
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
            args=(
                Root(
                    settings,
                    fresh_database_url,
                    MasterKey.from_text(settings.master_key or ""),
                    as_role=settings.app_role,
                    clock=lambda: now,
                ),
                {"ingest", "relay", "project"},
                stop,
            ),
            kwargs={
                "bootstrap": broker.bootstrap,
                "tuning": Tuning.fast(group_prefix=group_prefix),
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
    phase[0] = "again"
    stop, thread = serve("again")
    try:
        redelivered = faults.inject(
            "redelivery", lambda: publish(broker.bootstrap, names.interactions, interactions)
        )
        wait_for_progress(
            lambda: consumed(store, broker.bootstrap, names),
            lambda n: n == (1 + redelivered) * len(interactions),
            stall=60,
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
    finally:
        stop.set()
        thread.join(timeout=30)
    # The new group did read the old events (from the beginning), counted: every one,
    # besides the sentinels' (registration + purchase each).
    faults.assert_landed("redelivery")
    assert handled["again"] >= events + 2 * len(sentinels), (dict(handled), events)
    assert count(fresh_database_url, "customer_events") == events + 2 * len(sentinels)
    assert count(fresh_database_url, "interaction_keys") == len(unique) + len(sentinels)
    after = [row for row in rows() if not str(row[0]).startswith("sentinel-")]
    # No read model written again, updated_at included (shows the columns that differ).
    for old, new in zip(before, after, strict=True):
        assert old == new, [
            (n, a, b) for n, (a, b) in enumerate(zip(old, new, strict=True)) if a != b
        ]
    oracle(
        fresh_database_url,
        store,
        broker,
        names,
        [
            *interactions,
            *(interactions if redelivered else []),
            *(purchase(c, f"{c}-1") for c in sentinels.values()),
        ],
        published=(1 + redelivered) * len(interactions) + len(sentinels),
    )


def test_killing_every_role_at_random_and_cutting_the_listen_connection_loses_nothing(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """RELIABILITY's fault suite in small: ingest, relay and projector as processes,
    each killed with SIGKILL at random moments (and restarted) while a stream with bad
    records in it is published, and the relay's LISTEN connection terminated."""
    names = TopicNames(prefix=f"c{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    store = make_store(fresh_database_url)
    interactions = simulate(customers=300, seed=53, end=END).interactions
    roles = {
        role: serve_role(role, fresh_database_url, broker, names.prefix, batch_size=100)
        for role in ("ingest", "relay", "project")
    }
    rng = random.Random(11)
    faults = Faults()
    bad = bad_records(2 * len(CLASSES), interactions, seed=13)
    stream = mixed(interactions, bad, seed=17)
    chunks = [stream[n : n + 500] for n in range(0, len(stream), 500)]
    try:
        for n, chunk in enumerate(chunks):
            publish_raw(broker.bootstrap, names.interactions, chunk)
            time.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(sorted(roles))
            if faults.inject(f"kill {victim}", roles[victim].kill):
                roles[victim].wait(timeout=10)
                roles[victim] = serve_role(
                    victim, fresh_database_url, broker, names.prefix, batch_size=100
                )
            if n == len(chunks) // 3:
                faults.inject("listen cut", lambda: cut_listen_connection(fresh_database_url))
        progress = settled(
            url=fresh_database_url,
            store=store,
            bootstrap=broker.bootstrap,
            names=names,
            valid=interactions,
            bad_count=len(bad),
        )
        wait_for_progress(progress, lambda p: p == DONE, stall=90, what="the pipeline settled")
    finally:
        logs = {role: stop_role(process) for role, process in roles.items()}
    for role, process in roles.items():
        assert process.returncode == 0, (role, logs[role])
    for role in ("ingest", "relay", "project"):
        faults.assert_landed(f"kill {role}")
    faults.assert_landed("listen cut")
    assert sum(faults.landed.values()) == len(chunks) + 1
    oracle(fresh_database_url, store, broker, names, interactions, published=len(stream), bad=bad)


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


ZOMBIE_BATCH = 400
"""The projectors' batch in the zombie test: large, so a freeze while the zombie's CPU
climbs lands inside `Projector.handle` more often than between two batches."""
ZOMBIE_CHUNKS = 10
"""The zombie test publishes its stream in this many chunks: two per freeze (one to keep
both projectors busy, one published while the zombie is frozen), up to five freezes. A
freeze lands between two batches about one time in three (then the thawed zombie has
nothing to write late, and it is frozen again): five misses in a row are rare (~0.4 %)."""


def wait_until_busy(pid: int, *, within: float = 30.0) -> None:
    """Return once the process used at least 60 % of a core over the last 50 ms (from
    /proc: user + system ticks), i.e. it is working, not waiting on I/O."""

    def cpu() -> float:
        seconds = cpu_seconds(pid)
        assert seconds is not None, f"process {pid} is gone"
        return seconds

    end = time.monotonic() + within
    before = cpu()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = cpu()
        if now - before >= 0.03:
            return
        before = now
    raise AssertionError(f"process {pid} was never busy within {within:.0f} s")


def test_a_paused_projector_zombie_cannot_regress_the_read_models(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """Two projector processes; one is frozen (SIGSTOP) past its session timeout while
    the stream goes on, so the other takes over its partitions, then thawed (SIGCONT):
    whatever the zombie still writes or publishes late must be rejected or harmless."""
    names = TopicNames(prefix=f"z{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    store = make_store(fresh_database_url)
    interactions = simulate(customers=200, seed=59, end=END).interactions
    chunks = [interactions[n::ZOMBIE_CHUNKS] for n in range(ZOMBIE_CHUNKS)]
    # Each chunk holds every customer's every ZOMBIE_CHUNKS-th interaction, so each
    # one moves every customer's version on (and the survivor's rows past the zombie's).
    url = fresh_database_url
    roles = {
        name: serve_role(role, url, broker, names.prefix, batch_size=ZOMBIE_BATCH)
        for name, role in (
            ("ingest", "ingest"),
            ("relay", "relay"),
            ("zombie", "project"),
            ("survivor", "project"),
        )
    }
    faults = Faults()
    group = projector_group(broker, names)
    fenced = attempts = 0
    published: list[dict[str, Any]] = []
    try:
        zombie = roles["zombie"]
        while chunks and fenced == 0:
            # The zombie-to-be is a member of the projector group, with the survivor
            # (12 partitions between two members: each owns some) ...
            wait_for_progress(
                group, lambda n: n == 2, stall=60, what="two projector members in the group"
            )
            first = chunks.pop(0)
            publish(broker.bootstrap, names.interactions, first)
            published += first
            # ... and is frozen mid-batch: while its CPU time climbs (projecting, not
            # waiting on a fetch), so it holds a batch it has not written yet.
            wait_until_busy(zombie.pid)
            if not faults.inject("zombie", lambda: zombie.send_signal(signal.SIGSTOP)):
                break
            attempts += 1
            if chunks:
                more = chunks.pop(0)
                publish(broker.bootstrap, names.interactions, more)
                published += more
            # Past the 2 s session timeout the survivor is the group's one member,
            # owning every partition; it applies everything published so far, the
            # zombie's batch included, so what the zombie writes when it thaws is older
            # than what is stored.
            wait_for_progress(
                group, lambda n: n == 1, stall=60, what="the survivor to take every partition"
            )
            so_far = settled(
                url=url,
                store=store,
                bootstrap=broker.bootstrap,
                names=names,
                valid=published,
                bad_count=0,
            )
            wait_for_progress(so_far, lambda p: p == DONE, stall=90, what="the survivor caught up")
            before = roles_kit.log_of(zombie).count("writes refused")
            zombie.send_signal(signal.SIGCONT)
            # Frozen between two batches, it may have nothing to write late: then it
            # rejoins, and the next attempt freezes it again.
            with contextlib.suppress(AssertionError):
                wait_for_progress(
                    lambda: roles_kit.log_of(zombie).count("writes refused"),
                    lambda n, before=before: n > before,
                    stall=15,
                    what="the thawed zombie's late write, refused by the store",
                )
            fenced += roles_kit.log_of(zombie).count("writes refused") - before
        for rest in chunks:
            publish(broker.bootstrap, names.interactions, rest)
        progress = settled(
            url=url,
            store=store,
            bootstrap=broker.bootstrap,
            names=names,
            valid=interactions,
            bad_count=0,
        )
        wait_for_progress(progress, lambda p: p == DONE, stall=90, what="the pipeline settled")
    finally:
        logs = {name: stop_role(process) for name, process in roles.items()}
    for name, process in roles.items():
        assert process.returncode == 0, (name, logs[name])
    faults.assert_landed("zombie")
    assert fenced > 0, f"no fenced late write by the thawed zombie in {attempts} freezes"
    print(f"zombie: {fenced} fenced late writes logged in {attempts} freeze(s)")
    oracle(url, store, broker, names, interactions, published=len(interactions))


def projector_group(broker: EmbeddedBroker, names: TopicNames) -> Callable[[], int]:
    """How many members the projectors' consumer group has now."""
    watch = TopicWatch(broker.bootstrap, [names.customer_events])
    try:
        incarnation = incarnation_of(watch.ids()[names.customer_events])
    finally:
        watch.close()
    return group_size(broker, f"eventcrm-projector-{incarnation}")


def group_size(broker: EmbeddedBroker, group: str) -> Callable[[], int]:
    """How many members a consumer group has now (DescribeGroups). Tansu leaves the
    members' assignments empty there, so ownership is shown by other means."""

    def members() -> int:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        # Tansu's authorized-operations bits are not all known to kafka-python; they
        # are not needed here.
        admin._process_acl_operations = lambda described: described
        try:
            described = admin.describe_groups([group])[group]
        finally:
            admin.close()
        return len(described.get("members") or [])

    return members


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

    faults = Faults()
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
            faults.inject(
                "outage",
                lambda: conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'),
            )
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
    faults.assert_landed("outage")
    oracle(
        fresh_database_url,
        make_store(fresh_database_url),
        broker,
        names,
        interactions,
        published=len(interactions),
        check_read_models=False,
    )


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
    faults = Faults()

    stop = threading.Event()
    serving = threading.Thread(
        target=run_role_processes,
        args=(
            Root(
                settings, url, MasterKey.from_text(settings.master_key), as_role=settings.app_role
            ),
            {"ingest", "relay", "project"},
            stop,
        ),
        kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast()},
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
        watch = TopicWatch(broker.bootstrap, names.all())
        old_ids = watch.ids()
        faults.inject("broker wipe", broker.restart)
        wait_for_progress(
            lambda: sum(1 for name, now in watch.ids().items() if now and now != old_ids[name]),
            lambda n: n == len(names.all()),
            stall=60,
            what="the pipeline to provision the topics again",
        )
        watch.close()
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
                # the repeats upstream published after the wipe are all read too
                and consumed(store, broker.bootstrap, names) == len(interactions)
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
    faults.assert_landed("broker wipe")
    oracle(
        url,
        store,
        broker,
        names,
        interactions,
        published=len(interactions),
        seen_alerts=[record.value for record in before],
    )
