"""`eventcrm serve`: the pipeline roles in one process, each supervised in a thread.

Roles: ``ingest`` (Kafka `interactions` → the store), ``relay`` (the store's outbox →
`customer-events` and the DLQ topic), ``project`` (the faust app of `streams.app`,
run in-process with asyncio in its thread, as docs/streams-notes.md measured).

Each role builds its own clients (store pool, Kafka consumer or producer) when it
starts and closes them when it ends, so the supervisor restarts a crashed role with
fresh ones: a permanently failed idempotent producer is replaced, never reused
(RELIABILITY G5, G12). Topics are provisioned before any client touches them, since
the embedded broker would otherwise auto-create them with 4 partitions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from adapters.crypto import MasterKey
from adapters.ingest import Ingest
from adapters.readmodels import ReadModelStore, StoreStateLoader
from adapters.relay import Relay, RelayLockedError
from adapters.store import CustomerStore
from adapters.topics import TopicNames, ensure_topics
from infra.bootstrap import build_store, load_configured_policy
from infra.kafka import consumer, producer
from infra.settings import Settings
from streams.app import Record, build_app
from streams.projector import ChangePublisher, Projector

log = logging.getLogger(__name__)

ROLES: Final = frozenset({"ingest", "relay", "project"})


@dataclass(frozen=True, slots=True)
class Tuning:
    """Timing knobs; the defaults suit local runs on the embedded broker, tests use
    `Tuning.fast()` (docs/streams-notes.md: a group join takes half the session)."""

    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    restart_pause: float = 1.0
    """Pause before restarting a role that died (and between standby relay attempts)."""
    tick_interval: float = 1.0
    group_prefix: str = "eventcrm"

    @classmethod
    def fast(cls) -> Tuning:
        return cls(session_timeout=2.0, heartbeat_interval=0.5, restart_pause=0.5)


class KafkaRecordPublisher:
    """Sends change records with a kafka-python producer and returns only once all of
    them are acknowledged: the `publish_changes` of `streams.app.build_app`."""

    def __init__(self, client: KafkaProducer, *, timeout_s: float = 30.0) -> None:
        self._client = client
        self._timeout_s = timeout_s

    def __call__(self, records: Sequence[Record]) -> None:
        futures = [self._client.send(topic, key=key, value=value) for topic, key, value in records]
        self._client.flush(timeout=self._timeout_s)
        for future in futures:
            future.get(timeout=0)  # raises the send's error, if any


def partition_of(key: bytes, partitions: int) -> int:
    """kafka-python's default partitioner (the relay's): murmur2 of the key."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def run_roles(
    settings: Settings,
    roles: set[str],
    stop: threading.Event,
    *,
    bootstrap: str,
    app_url: str,
    master_key: MasterKey,
    as_role: str | None = None,
    tuning: Tuning | None = None,
) -> None:
    """Provision the topics, run ``roles`` until ``stop`` is set, then wait for them."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    pipeline = Pipeline(
        settings,
        bootstrap=bootstrap,
        app_url=app_url,
        master_key=master_key,
        as_role=as_role,
        tuning=tuning or Tuning(),
    )
    pipeline.run(roles, stop)


class Pipeline:
    """The roles and their supervisor."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        app_url: str,
        master_key: MasterKey,
        as_role: str | None,
        tuning: Tuning,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.app_url = app_url
        self.master_key = master_key
        self.as_role = as_role
        self.tuning = tuning
        self.topics = TopicNames(prefix=settings.topic_prefix)

    def run(self, roles: set[str], stop: threading.Event) -> None:
        ensure_topics(self.bootstrap, self.topics.all(), partitions=self.topics.partitions())
        targets: dict[str, Callable[[threading.Event], None]] = {
            "ingest": self.ingest,
            "relay": self.relay,
            "project": self.project,
        }
        threads = [
            threading.Thread(
                target=self.supervise,
                args=(name, targets[name], stop),
                name=f"eventcrm-{name}",
                daemon=True,
            )
            for name in sorted(roles)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def supervise(
        self, name: str, target: Callable[[threading.Event], None], stop: threading.Event
    ) -> None:
        """Run ``target`` until ``stop``; restart it after a pause if it dies (G12)."""
        while not stop.is_set():
            try:
                target(stop)
            except Exception:
                log.exception("role %s died; restarting in %.1fs", name, self.tuning.restart_pause)
            else:
                if not stop.is_set():
                    log.warning("role %s returned early; restarting", name)
            stop.wait(self.tuning.restart_pause)

    def store(self) -> CustomerStore:
        return build_store(self.settings, self.app_url, self.master_key, as_role=self.as_role)

    # --- roles ------------------------------------------------------------------------

    def ingest(self, stop: threading.Event) -> None:
        store = self.store()
        try:
            client = consumer(
                self.bootstrap,
                group_id=f"{self.tuning.group_prefix}-ingest",
                session_timeout_ms=int(self.tuning.session_timeout * 1000),
            )
            try:
                Ingest(
                    store,
                    client,
                    topic=self.topics.interactions,
                    batch_size=self.settings.record_batch_size,
                    retry_pause=self.tuning.restart_pause,
                ).run(stop)
            finally:
                client.close()
        finally:
            store.close()

    def relay(self, stop: threading.Event) -> None:
        store = self.store()
        client = producer(self.bootstrap)
        try:
            relay = Relay(
                store,
                client,
                events_topic=self.topics.customer_events,
                dlq_topic=self.topics.interactions_dlq,
                conninfo=self.app_url,
            )
            while not stop.is_set():
                try:
                    relay.run(stop)
                except RelayLockedError:
                    log.debug("relay: another relay is active; standing by")
                    stop.wait(self.tuning.restart_pause)
        finally:
            client.close()
            store.close()

    def project(self, stop: threading.Event) -> None:
        asyncio.run(self._project(stop))

    async def _project(self, stop: threading.Event) -> None:
        store = self.store()
        client = producer(self.bootstrap)
        try:
            policy = load_configured_policy(self.settings)
            read_models = ReadModelStore(store)
            loader = StoreStateLoader(store, policy)

            def projector(publisher: ChangePublisher) -> Projector:
                return Projector(
                    policy=policy, loader=loader, sink=read_models, publisher=publisher
                )

            served = build_app(
                app_id=f"{self.tuning.group_prefix}-projector",
                bootstrap=self.bootstrap,
                topics=self.topics,
                projector_factory=projector,
                publish_changes=KafkaRecordPublisher(client),
                due=read_models.due,
                partition_of=partition_of,
                tick_interval=self.tuning.tick_interval,
                session_timeout=self.tuning.session_timeout,
                heartbeat_interval=self.tuning.heartbeat_interval,
                retry_pause=self.tuning.restart_pause,
            )
            await served.run(stop)
        finally:
            client.close()
            store.close()
