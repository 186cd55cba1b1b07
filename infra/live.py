"""The running stack for `serve` and the streaming `demo`: databases, broker, roles."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from adapters.simulate import simulate, start_of_day
from adapters.topics import TopicNames, ensure_topics
from infra import kafka
from infra.bootstrap import (
    Root,
    configured_root,
    load_master_key,
    recreate_database,
    run_migrations,
)
from infra.broker import embedded_broker
from infra.clock import Clock, system_clock
from infra.embedded import embedded_postgres
from infra.serve import ROLES, Tuning, run_role_processes, run_roles
from infra.settings import Settings
from projections import ReplayStep

DEMO_DATABASE = "eventcrm_demo"


@dataclass(frozen=True)
class Stack:
    root: Root
    bootstrap: str


@contextlib.contextmanager
def running_stack(
    settings: Settings,
    *,
    say: Callable[[str], None],
    broker: bool = True,
    clock: Clock = system_clock,
) -> Iterator[Stack]:
    """Configured services where set, embedded ones (PostgreSQL, Tansu) where not (no
    embedded broker when ``broker`` is False: the api role alone needs none)."""
    with (
        configured_root(settings, say=say, clock=clock) as root,
        contextlib.ExitStack() as stack,
    ):
        # Reported once, here, instead of by roles restarting forever.
        root.check()
        if settings.kafka_bootstrap or not broker:
            bootstrap = settings.kafka_bootstrap or ""
        else:
            bootstrap = stack.enter_context(embedded_broker()).bootstrap
            say(f"embedded Kafka-compatible broker (Tansu) on {bootstrap}")
        yield Stack(root, bootstrap)


def serve(
    settings: Settings,
    roles: set[str],
    *,
    say: Callable[[str], None],
    http: str = "127.0.0.1:8080",
    clock: Clock = system_clock,
) -> None:
    """Run `roles` until SIGTERM or SIGINT, then stop them cleanly. The ``api`` role
    (the HTTP API and console at ``http``) runs in this process; the pipeline roles as
    before. All of them run on ``clock``."""
    pipeline = roles - {"api"}
    with running_stack(settings, say=say, broker=bool(pipeline), clock=clock) as live:
        stop = threading.Event()
        handlers = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        api: threading.Thread | None = None
        failed: list[BaseException] = []
        try:
            say(f"serving {', '.join(sorted(roles))} (Ctrl-C or SIGTERM stops)")
            if "api" in roles:
                api = threading.Thread(
                    target=_serve_api,
                    args=(stop, live, http, say, failed),
                    name="eventcrm-api-role",
                    daemon=True,
                )
                api.start()
            if not pipeline:
                stop.wait()
            else:
                # Several roles: one process each (they are CPU-bound; see
                # run_role_processes).
                run = run_roles if len(pipeline) == 1 else run_role_processes
                run(
                    live.root,
                    pipeline,
                    stop,
                    bootstrap=live.bootstrap,
                    tuning=Tuning.from_settings(settings),
                )
        finally:
            stop.set()
            if api is not None:
                api.join(20)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if failed:
            raise failed[0]


def _serve_api(
    stop: threading.Event,
    live: Stack,
    http: str,
    say: Callable[[str], None],
    failed: list[BaseException],
) -> None:
    from infra.api import serve_api  # noqa: PLC0415 - uvicorn only where the api runs

    try:
        serve_api(
            live.root,
            stop,
            address=http,
            broker=live.bootstrap or None,
            on_listening=lambda where: say(f"HTTP API and console on {where}"),
        )
    except BaseException as exc:  # noqa: BLE001 - handed to serve, which stops
        failed.append(exc)
        stop.set()


@dataclass
class DemoReport:
    published: int
    ingest_seconds: float
    caught_up_seconds: float
    as_of: datetime
    views: list[dict[str, Any]]
    replay_customer: str | None
    replay: list[ReplayStep]


def streaming_demo(
    settings: Settings,
    *,
    customers: int,
    say: Callable[[str], None],
    progress: Callable[[str, int, int], None],
    timeout: float = 80.0,
    clock: Clock = system_clock,
) -> DemoReport:
    """Embedded PostgreSQL (a fresh demo database) and broker, all roles, a simulated year
    of `customers` up to the start of ``clock``'s day, published through Kafka; returns
    once the read models caught up."""
    home_settings = settings.model_copy(update={"database_url": None, "kafka_bootstrap": None})
    with embedded_postgres(settings.home) as owner_url:
        demo_url = recreate_database(owner_url, DEMO_DATABASE)
        demo_settings = home_settings.model_copy(update={"database_url": demo_url})
        run_migrations(demo_settings, demo_url)
        master_key = load_master_key(home_settings, embedded=True, say=say)
        root = Root(demo_settings, demo_url, master_key, as_role=settings.app_role, clock=clock)
        with embedded_broker() as broker:
            # Provisioned here, before `_drive` publishes: the roles start (and provision)
            # in the background, and a first publish would make the broker auto-create
            # `interactions` with 4 partitions.
            topics = TopicNames(prefix=settings.topic_prefix)
            ensure_topics(broker.bootstrap, topics.all(), partitions=topics.partitions())
            stop = threading.Event()
            roles = threading.Thread(
                target=run_role_processes,
                args=(root, set(ROLES), stop),
                kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast()},
                daemon=True,
            )
            roles.start()
            try:
                return _drive(
                    root,
                    broker.bootstrap,
                    topics,
                    customers=customers,
                    progress=progress,
                    timeout=timeout,
                )
            finally:
                stop.set()
                roles.join(timeout=30)


def _drive(
    root: Root,
    bootstrap: str,
    topics: TopicNames,
    *,
    customers: int,
    progress: Callable[[str, int, int], None],
    timeout: float,
) -> DemoReport:
    end = start_of_day(root.clock())
    population = simulate(customers=customers, seed=7, end=end)
    producer = kafka.producer(bootstrap)
    started = time.perf_counter()
    for n, item in enumerate(population.interactions, start=1):
        producer.send(
            topics.interactions, key=item["customer_id"].encode(), value=orjson.dumps(item)
        )
        if n % 2000 == 0:
            progress("publishing", n, len(population.interactions))
    producer.flush()
    producer.close()
    published = len(population.interactions)
    progress("publishing", published, published)
    ingested_at = caught_up_at = None
    deadline = time.monotonic() + timeout
    with psycopg.connect(root.app_url) as conn:
        while time.monotonic() < deadline:
            consumed, stored, applied = _counts(conn)
            progress("ingest", consumed, published)
            if consumed >= published and ingested_at is None:
                ingested_at = time.perf_counter() - started
            if ingested_at is not None and applied >= stored:
                caught_up_at = time.perf_counter() - started
                break
            time.sleep(0.25)
    if ingested_at is None or caught_up_at is None:
        raise TimeoutError(f"the pipeline did not catch up within {timeout:.0f} s")
    with root.services() as services:
        views = [dict(model.snapshot) for model in services.read_models.all()]
        # the riskiest customer with an open alert, else the riskiest one still engaged
        at_risk = sorted(
            (v for v in views if v["lifecycle_stage"] not in ("prospect", "churned")),
            key=lambda v: (not v["alert_open"], -float(v["churn_score"]), v["customer_id"]),
        )
        customer = at_risk[0]["customer_id"] if at_risk else None
        steps = services.reader.replay(customer, as_of=end) if customer else []
    return DemoReport(published, ingested_at, caught_up_at, end, views, customer, steps)


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(interactions consumed, events stored, events the read models applied)."""
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(notification_id + 1), 0) FROM positions "
        "        WHERE application_name LIKE 'ingest:%%'),"
        " (SELECT count(*) FROM customer_events),"
        " (SELECT coalesce(sum(applied_version), 0) FROM read_models)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
