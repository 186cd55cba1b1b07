"""Scale-out and time, end to end: the pipeline roles of `infra.serve` against a real
broker and a real PostgreSQL.

- Two projector workers (two faust apps, one consumer group, sharing the 12
  partitions of `customer-events`, the second joining mid-stream) produce the same
  read models as one worker reading the same topic from the beginning, and both equal
  a fresh replay of the store.
- Two ingest processes (one consumer group, the second joining mid-stream) store every
  interaction exactly once.
- The projector timer, driven by a controllable clock, publishes a silent customer's
  at-risk change and churn alert with the instant the read model announced as its
  next deadline (the computed instant), however late the clock gets there.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from adapters.crypto import MasterKey
from adapters.readmodels import ReadModel, ReadModelStore
from adapters.simulate import simulate
from adapters.store import CustomerStore
from adapters.topics import TopicNames, TopicWatch, ensure_topics, incarnation_of
from infra.bootstrap import Root, load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from infra.clock import system_clock
from infra.serve import Tuning, partition_of, run_roles
from infra.settings import Settings
from streams.app import ProjectorApp
from streams.projector import parse_customer_event
from tests.conftest import StoreFactory, settings_for
from tests.faultkit.roles import wait_for_progress
from tests.faultkit.switch import Faults
from tests.integration.test_faults import (
    group_size,
    oracle,
    publish,
    serve_ingest,
    stop_role,
)
from tests.integration.test_pipeline import assert_live_equals_replay, count, read_topic, wait_until

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 1, tzinfo=UTC)
"""The simulation's fixed "now" (in the past)."""

FIXED_NOW = END + timedelta(days=19, hours=7)
"""The projectors' clock in the scale-out test: weeks after the simulation, so timers
have deadlines to fire, and the same instant in every run."""

Clock = Callable[[], datetime]


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def provision(broker: EmbeddedBroker) -> TopicNames:
    names = TopicNames(prefix=f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    return names


def serve(
    settings: Settings,
    roles: set[str],
    stop: threading.Event,
    *,
    bootstrap: str,
    url: str,
    tuning: Tuning,
    name: str,
    clock: Clock = system_clock,
) -> threading.Thread:
    """`run_roles` in a thread of its own (one faust app, one asyncio loop per call)."""
    assert settings.master_key is not None
    root = Root(
        settings,
        url,
        MasterKey.from_text(settings.master_key),
        as_role=settings.app_role,
        clock=clock,
    )
    thread = threading.Thread(
        target=run_roles,
        args=(root, roles, stop),
        kwargs={"bootstrap": bootstrap, "tuning": tuning},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def stop_all(stop: threading.Event, threads: Sequence[threading.Thread]) -> None:
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"roles did not stop: {alive}"


@dataclass
class Workers:
    """Which projector worker did what, told apart by their clocks (each worker's
    `ProjectorApp.clock` is the clock of the root it was served with).

    Records the messages each worker's projector handled successfully and every
    partition assignment it got, by wrapping `ProjectorApp._handle` and
    `ProjectorApp.on_assigned` (observation only: both call the original first).
    """

    clocks: dict[int, str] = field(default_factory=dict)
    handled: list[tuple[str, float, str, int]] = field(default_factory=list)
    """``(worker, monotonic time, customer_id, version)`` per handled message."""
    assigned: list[tuple[str, float, frozenset[int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clock(self, worker: str, now: datetime) -> Clock:
        def fixed() -> datetime:
            return now

        self.clocks[id(fixed)] = worker
        return fixed

    def name(self, app: ProjectorApp) -> str:
        return self.clocks.get(id(app.clock), "?")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original_handle = ProjectorApp._handle
        original_on_assigned = ProjectorApp.on_assigned
        workers = self

        def handle(self: ProjectorApp, batch: Sequence[bytes]) -> None:
            original_handle(self, batch)
            at = time.monotonic()
            rows = []
            for message in batch:
                try:
                    event = parse_customer_event(message)
                except ValueError:
                    continue
                rows.append((workers.name(self), at, event.customer_id, event.version))
            with workers.lock:
                workers.handled.extend(rows)

        def on_assigned(self: ProjectorApp, assigned: Any) -> None:
            original_on_assigned(self, assigned)
            with workers.lock:
                workers.assigned.append(
                    (workers.name(self), time.monotonic(), self.assigned or frozenset())
                )

        monkeypatch.setattr(ProjectorApp, "_handle", handle)
        monkeypatch.setattr(ProjectorApp, "on_assigned", on_assigned)

    def latest_assignment(self, worker: str) -> frozenset[int] | None:
        with self.lock:
            mine = [partitions for name, _, partitions in self.assigned if name == worker]
        return mine[-1] if mine else None

    def handled_by(self, worker: str, *, after: float = 0.0) -> list[tuple[str, int]]:
        with self.lock:
            return [(c, v) for name, at, c, v in self.handled if name == worker and at > after]


STABLE_SNAPSHOT_KEYS = (
    "stage_entered_at",
    "stage_entries",
    "last_purchase_at",
    "purchase_count",
    "event_count",
    "alert_open",
    "policy_version",
)
"""Snapshot fields that do not depend on when the timer last evaluated the read model
(unlike the churn score, stage days and the trailing-window sums)."""


def stable(model: ReadModel) -> dict[str, Any]:
    """What a read model must say whichever worker, batching or timer order built it,
    once every deadline up to the (fixed) clock has fired."""
    return {
        "customer_id": model.customer_id,
        "applied_version": model.applied_version,
        "applied_position": model.applied_position,
        "next_deadline": model.next_deadline,
        "tier": model.tier,
        "lifecycle_stage": model.lifecycle_stage,
        "alert_state": model.alert_state,
        "alert_id": model.alert_id,
        **{key: model.snapshot.get(key) for key in STABLE_SNAPSHOT_KEYS},
    }


def caught_up(read_models: ReadModelStore, versions: dict[str, int], now: datetime) -> bool:
    """Every customer's read model at its stored version, and no deadline up to ``now``
    left unfired."""
    models = {m.customer_id: m for m in read_models.all()}
    if any(
        (model := models.get(customer_id)) is None or model.applied_version != version
        for customer_id, version in versions.items()
    ):
        return False
    return not read_models.due(now)


def test_two_projector_workers_produce_the_read_models_of_one(
    broker: EmbeddedBroker,
    fresh_database_url: str,
    make_store: StoreFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = provision(broker)
    counts = names.partitions()
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    store: CustomerStore = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    policy = load_configured_policy(settings)
    workers = Workers()
    workers.install(monkeypatch)

    interactions = simulate(customers=60, seed=41, end=END).interactions
    unique = {(i["source"], i["event_id"]): i for i in interactions}
    versions: dict[str, int] = {}
    for item in unique.values():
        versions[item["customer_id"]] = versions.get(item["customer_id"], 1) + 1
    first, second = len(interactions) * 2 // 5, len(interactions) * 7 // 10
    assert len(versions) == 60

    def serve_as(
        roles: set[str],
        stop: threading.Event,
        tuning: Tuning,
        name: str,
        clock: Clock = system_clock,
    ) -> Any:
        return serve(
            settings,
            roles,
            stop,
            bootstrap=broker.bootstrap,
            url=fresh_database_url,
            tuning=tuning,
            name=name,
            clock=clock,
        )

    # --- two workers, the second joining mid-stream ---------------------------------
    stop = threading.Event()
    threads = [serve_as({"ingest", "relay"}, stop, Tuning.fast(), "ingest-relay")]
    both_alive: list[bool] = []
    try:
        threads.append(
            serve_as({"project"}, stop, Tuning.fast(), "a", workers.clock("a", FIXED_NOW))
        )
        publish(broker.bootstrap, names.interactions, interactions[:first])
        wait_until(
            lambda: len(workers.handled_by("a")) > 100,
            timeout=30,
            what="the first worker consuming",
        )
        threads.append(
            serve_as({"project"}, stop, Tuning.fast(), "b", workers.clock("b", FIXED_NOW))
        )
        # More events while the second worker joins: the group rebalances mid-stream.
        publish(broker.bootstrap, names.interactions, interactions[first:second])

        def split() -> bool:
            a, b = workers.latest_assignment("a"), workers.latest_assignment("b")
            return bool(a and b and not a & b and len(a | b) == counts[names.customer_events])

        wait_until(split, timeout=30, what="the two workers sharing the partitions")
        both_joined = time.monotonic()
        publish(broker.bootstrap, names.interactions, interactions[second:])
        wait_until(
            lambda: caught_up(read_models, versions, FIXED_NOW),
            timeout=40,
            what="the read models of two workers at the stored versions",
        )
        both_alive.append(all(thread.is_alive() for thread in threads))
        assignments = {w: workers.latest_assignment(w) for w in ("a", "b")}
    finally:
        stop_all(stop, threads)
    assert both_alive == [True]

    # Both workers did work after the rebalance, each on customers of its own partitions.
    for worker, partitions in assignments.items():
        assert partitions
        mine = {
            customer
            for customer, _ in workers.handled_by(worker, after=both_joined)
            if partition_of(customer.encode(), counts[names.customer_events]) in partitions
        }
        assert mine, f"worker {worker} handled nothing of its own after both joined"
    assert {name for name, _, _ in workers.assigned} == {"a", "b"}
    assert any(len(p) == counts[names.customer_events] for w, _, p in workers.assigned if w == "a")

    # (a) Live equals replay.
    assert_live_equals_replay(read_models, store, policy)
    models = list(read_models.all())
    assert any(m.evaluated_at == FIXED_NOW for m in models), "the timers fired"
    two_workers = {m.customer_id: stable(m) for m in models}
    assert set(two_workers) == set(versions)
    assert any(m["lifecycle_stage"] == "at_risk" for m in two_workers.values())

    # --- (b) one worker, a fresh group, the same topic from the beginning ------------
    with psycopg.connect(fresh_database_url, user=settings.app_role) as conn:
        conn.execute("DELETE FROM read_models")  # read models are disposable
    assert not list(read_models.all())
    stop = threading.Event()
    single = Tuning.fast(group_prefix=f"single-{uuid.uuid4().hex[:8]}")
    threads = [serve_as({"project"}, stop, single, "single", workers.clock("single", FIXED_NOW))]
    try:
        wait_until(
            lambda: caught_up(read_models, versions, FIXED_NOW),
            timeout=40,
            what="the read models of one worker at the stored versions",
        )
    finally:
        stop_all(stop, threads)
    assert workers.handled_by("single")
    assert_live_equals_replay(read_models, store, policy)
    one_worker = {m.customer_id: stable(m) for m in read_models.all()}
    mismatched = sorted(c for c in versions if one_worker.get(c) != two_workers.get(c))
    assert not mismatched, [(two_workers[c], one_worker.get(c)) for c in mismatched[:3]]


# --- time ---------------------------------------------------------------------------

T0 = datetime(2026, 8, 3, 9, 30, tzinfo=UTC)
"""The silent customer's last purchase and the clock's start (in the past)."""

LATE = timedelta(hours=5)
"""How long after each announced deadline the test clock gets there."""


def silent_customer(customer_id: str, *, purchases: int, every: timedelta) -> list[dict[str, Any]]:
    """A registration, then ``purchases`` regular purchases, the last one at `T0`."""
    first = T0 - every * (purchases - 1)
    items: list[dict[str, Any]] = [
        {
            "event_id": f"{customer_id}-reg",
            "source": "crm",
            "customer_id": customer_id,
            "kind": "registered",
            "occurred_at": (first - timedelta(days=3)).isoformat(),
            "profile": {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+4930123456",
                "country": "DE",
            },
        }
    ]
    for n in range(purchases):
        items.append(
            {
                "event_id": f"{customer_id}-p{n}",
                "source": "shop",
                "customer_id": customer_id,
                "kind": "purchase",
                "occurred_at": (first + every * n).isoformat(),
                "amount": "49.90",
                "currency": "EUR",
                "order_id": f"o-{customer_id}-{n}",
            }
        )
    return items


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def changes_of(bootstrap: str, topic: str, partitions: int, customer_id: str) -> list[Any]:
    out = []
    for record in read_topic(bootstrap, topic, partitions):
        change = orjson.loads(record.value)
        if change["customer_id"] == customer_id:
            assert record.key.decode() == customer_id
            out.append(change)
    return out


def test_a_silent_customer_gets_its_at_risk_change_and_alert_at_the_computed_instant(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    names = provision(broker)
    counts = names.partitions()
    settings = settings_for(fresh_database_url, topic_prefix=names.prefix)
    store: CustomerStore = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    customer = f"silent-{uuid.uuid4().hex[:8]}"
    items = silent_customer(customer, purchases=16, every=timedelta(days=7))
    stored_version = len(items) + 1  # + Created
    assert max(datetime.fromisoformat(i["occurred_at"]) for i in items) == T0

    now = [T0]
    tuning = Tuning.fast(tick_interval=0.2)
    stop = threading.Event()
    serving = serve(
        settings,
        {"ingest", "relay", "project"},
        stop,
        bootstrap=broker.bootstrap,
        url=fresh_database_url,
        tuning=tuning,
        name="pipeline",
        clock=lambda: now[0],
    )
    steps: list[tuple[datetime, datetime, ReadModel]] = []
    """``(announced deadline, clock set, read model after the tick)`` per step."""
    try:
        publish(broker.bootstrap, names.interactions, items)

        def model() -> ReadModel | None:
            return read_models.get(customer)

        def settled() -> bool:
            current = model()
            return (
                current is not None
                and current.applied_version == stored_version
                and current.next_deadline is not None
            )

        def evaluated_at(moment: datetime) -> Callable[[], bool]:
            def done() -> bool:
                current = model()
                return current is not None and current.evaluated_at == moment

            return done

        wait_until(settled, timeout=30, what="the customer's read model with a deadline")
        current = model()
        assert current is not None
        assert current.lifecycle_stage == "active"
        assert current.alert_state == "none"
        while current.lifecycle_stage != "at_risk" or current.alert_state == "none":
            assert len(steps) < 8, f"no at-risk and alert after {steps}"
            announced = current.next_deadline
            assert announced is not None
            assert announced > now[0]
            now[0] = announced + LATE
            clock = now[0]
            wait_until(
                evaluated_at(clock),
                timeout=10,
                what=f"the timer to evaluate the customer at {clock}",
            )
            current = model()
            assert current is not None
            steps.append((announced, clock, current))
    finally:
        stop.set()
        serving.join(timeout=30)
    assert not serving.is_alive(), "the roles did not stop"

    # The read model moved at the announced instants: each step's stage began there.
    at_risk_step = next(s for s in steps if s[2].lifecycle_stage == "at_risk")
    alert_step = next(s for s in steps if s[2].alert_state != "none")
    assert instant(at_risk_step[2].snapshot["stage_entered_at"]) == at_risk_step[0]

    lifecycle = changes_of(
        broker.bootstrap, names.lifecycle_changes, counts[names.lifecycle_changes], customer
    )
    at_risk = [c for c in lifecycle if c["to_value"] == "at_risk"]
    assert at_risk, lifecycle
    assert {instant(c["effective_at"]) for c in at_risk} == {at_risk_step[0]}
    assert at_risk[0]["from_value"] == "active"
    assert instant(at_risk[0]["effective_at"]) < at_risk_step[1]  # not the clock's time
    # The stage's whole path (a change may be published twice: at least once).
    assert list(dict.fromkeys(c["to_value"] for c in lifecycle)) == ["new", "active", "at_risk"]

    alerts = changes_of(broker.bootstrap, names.churn_alerts, counts[names.churn_alerts], customer)
    raised = [c for c in alerts if c["from_value"] == "none"]
    assert raised, alerts
    assert {instant(c["effective_at"]) for c in raised} == {alert_step[0]}
    assert {c["to_value"] for c in raised} == {alert_step[2].alert_state}
    assert {c["alert_id"] for c in raised} == {alert_step[2].alert_id}
    assert instant(raised[0]["effective_at"]) < alert_step[1]  # not the clock's time
    assert all(instant(c["effective_at"]) in {s[0] for s in steps} for c in alerts)

    # Live still equals replay at the clock the read model was last evaluated at.
    policy = load_configured_policy(settings)
    assert_live_equals_replay(read_models, store, policy)


def test_two_ingest_processes_share_the_partitions_and_store_everything_once(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    faults = Faults()
    names = provision(broker)
    url = fresh_database_url
    store = make_store(url)
    interactions = simulate(customers=400, seed=47, end=END).interactions
    half = len(interactions) // 2
    publish(broker.bootstrap, names.interactions, interactions[:half])
    unique = {(i["source"], i["event_id"]) for i in interactions}
    members = ingest_group(broker, names)

    first = serve_ingest(url, broker, names.prefix, batch_size=100)
    second: list[subprocess.Popen[bytes]] = []
    try:
        # The second consumer joins the group once the first is under way: a rebalance
        # mid-stream, each partition then resumed from its stored position.
        wait_for_progress(
            lambda: count(url, "interaction_keys"),
            lambda n: n > 0,
            stall=60,
            what="the first ingest process under way",
            poll=0.01,
        )
        faults.inject(
            "second ingest",
            lambda: second.append(serve_ingest(url, broker, names.prefix, batch_size=100)),
        )
        wait_for_progress(members, lambda n: n == 2, stall=60, what="two ingest members")
        # The second half goes to every partition. The first process is frozen a
        # moment (less than its session: no rebalance needed): whatever is stored
        # meanwhile, the second stored.
        publish(broker.bootstrap, names.interactions, interactions[half:])
        first.send_signal(signal.SIGSTOP)
        try:
            frozen_at = count(url, "interaction_keys")
            wait_for_progress(
                lambda: count(url, "interaction_keys"),
                lambda n: n > frozen_at,
                stall=30,
                what="the second ingest storing while the first is frozen",
                poll=0.05,
            )
            second_share = count(url, "interaction_keys") - frozen_at
        finally:
            first.send_signal(signal.SIGCONT)
        wait_for_progress(
            lambda: count(url, "interaction_keys"),
            lambda n: n == len(unique),
            stall=60,
            what="every interaction stored by the two ingest processes",
        )
    finally:
        for process in (first, *second):
            stop_role(process)
    faults.assert_landed("second ingest")
    assert first.returncode == 0
    assert second[0].returncode == 0
    assert second_share > 0
    oracle(
        url,
        store,
        broker,
        names,
        interactions,
        published=len(interactions),
        check_read_models=False,
    )


def ingest_group(broker: EmbeddedBroker, names: TopicNames) -> Callable[[], int]:
    """How many members the ingest consumer group has now."""
    watch = TopicWatch(broker.bootstrap, [names.interactions])
    try:
        incarnation = incarnation_of(watch.ids()[names.interactions])
    finally:
        watch.close()
    return group_size(broker, f"eventcrm-ingest-{incarnation}")
