"""The faust app of the `project` role: one agent, one timer, one rebalance hook.

Everything deterministic lives in `streams.projector.Projector`; this module only
drives it from Kafka and a clock:

- the agent reads `customer-events` as raw bytes in batches
  (``stream.take(batch_size, within=...)``) and calls `Projector.handle`;
- a timer calls `Projector.tick` with the instant of the clock `infra` injects (the
  process's one clock, ADR 0028): time enters here, at the edge, never in
  `projections`. While the projector is behind (its last batch was full: a backlog,
  e.g. history replayed through Kafka) the timer waits, up to ``max_tick_delay``:
  advancing customers to "now" while their older events are still queued makes each
  of those events a late one, refolded and re-advanced (measured: 60 % of the
  projector's CPU in a historical stream). Changes still carry their computed
  instants, so only their publication is later;
- after a rebalance (and then periodically) the customers this worker no longer owns
  are dropped (`Projector.retain`) and the owned ones whose stored read model has a
  due deadline are re-adopted (`Projector.resume`), since the `read_models` table is
  the durable list of armed timers.

The projector does blocking I/O (PostgreSQL, a Kafka producer's flush), so each call
runs in a worker thread while the event loop keeps the consumer's heartbeats going;
an `asyncio.Lock` serialises the calls, because a `Projector` is not thread-safe.

Faust's committed offsets are only a starting point: correctness comes from the
projector's version dedupe and the read models in PostgreSQL (RELIABILITY G6), so a
redelivered batch is harmless. Stores and producers are handed in by `infra`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, cast

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import EventT

from projections import Change
from projections.messages import WireError
from projections.ports import ChangePublisher
from streams.projector import Projector, parse_customer_event

log = logging.getLogger(__name__)

QUIET_LOGGERS: Final = ("faust", "mode", "aiokafka")

FETCH_MAX_WAIT_MS: Final = 100
"""How long a fetch may wait for data. faust hard-codes 1,500 ms; on Tansu a fetch
with too little data waits that long, so one hop cost p50 ~380 / p99 ~750 ms, against
13 / 53 ms at 100 ms (bench/pipeline.py); 10 ms made an idle broker busy."""


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts, to build its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """faust's app on its own Kafka driver, but with `FETCH_MAX_WAIT_MS`."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


Record = tuple[str, bytes, bytes]
"""``(topic, key, value)`` of one change message."""

DueRows = Callable[[datetime], Iterable[tuple[str, int, int]]]
"""``until -> (customer_id, applied_version, applied_position)`` of read models whose
deadline is due (`adapters.readmodels.ReadModelStore.due`)."""


class StreamTopics(Protocol):
    """The topic names the app uses (`adapters.topics.TopicNames` fits)."""

    @property
    def customer_events(self) -> str: ...
    @property
    def tier_changes(self) -> str: ...
    @property
    def lifecycle_changes(self) -> str: ...
    @property
    def churn_alerts(self) -> str: ...
    def change_topic(self, kind: str) -> str: ...


class TopicChangePublisher(ChangePublisher):
    """The projector's `ChangePublisher`: each change to its topic by kind, key =
    customer id, value = orjson of `Change.to_dict()`.

    ``publish_records`` must return only once every record is durably handed over
    (sent and flushed) and raise otherwise, so the projector's "publish, then upsert"
    order holds.
    """

    def __init__(
        self, topics: StreamTopics, publish_records: Callable[[Sequence[Record]], object]
    ) -> None:
        self._topics = topics
        self._publish_records = publish_records

    def records(self, changes: Sequence[Change]) -> list[Record]:
        return [
            (
                self._topics.change_topic(change.kind),
                change.customer_id.encode(),
                orjson.dumps(change.to_dict()),
            )
            for change in changes
        ]

    def publish(self, changes: Sequence[Change]) -> None:
        if changes:
            self._publish_records(self.records(changes))


RetryBatch = Callable[[Callable[[], Awaitable[None]], Callable[[], bool]], Awaitable[None]]
"""Runs an attempt (a batch, or a tick) until it succeeds, pausing between failures,
and re-raises the last failure once the second argument says the app stops. Handed in
by infra (the `PROJECTOR_BATCH` policy of adapters.retry: streams do not import
adapters)."""


@dataclass
class ProjectorApp:
    """A faust app driving one `Projector`; `run` serves it until a stop event."""

    app: faust.App
    projector: Projector
    topics: StreamTopics
    due: DueRows | None
    partition_of: Callable[[bytes, int], int] | None
    clock: Callable[[], datetime]
    retry: RetryBatch
    batch_size: int = 500
    max_tick_delay: float = 15.0
    """Longest the timer waits while the projector is behind (seconds)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    behind: bool = False
    """The last batch was full: more is queued."""
    last_tick: float = field(default_factory=time.monotonic)
    assigned: frozenset[int] | None = None
    """Partitions of `customer-events` this worker owns (None: not known yet)."""
    reassigned: bool = False

    # --- the three drivers ----------------------------------------------------------

    async def project(self, batch: Sequence[bytes]) -> None:
        """Handle one batch, retrying failures (the projector rebuilt what it touched)
        until it lands or the app stops; malformed messages are logged and skipped."""
        self.behind = len(batch) >= self.batch_size

        async def attempt() -> None:
            async with self.lock:
                await asyncio.to_thread(self._handle, batch)

        await self.retry(attempt, lambda: bool(self.app.should_stop))

    async def tick(self) -> None:
        """Re-adopt due customers if needed, then advance every due held customer —
        unless the projector is behind and the last tick is recent. A failure (the
        store or the producer unavailable) is retried like a batch, at the clock of
        each attempt, until it lands or the app stops: an exception out of a faust
        timer would crash the app, and the role would start it again and again for as
        long as the outage lasts."""
        if self.behind and time.monotonic() - self.last_tick < self.max_tick_delay:
            return
        self.last_tick = time.monotonic()

        async def attempt() -> None:
            now = self.clock()
            async with self.lock:
                await asyncio.to_thread(self._tick, now)

        await self.retry(attempt, lambda: bool(self.app.should_stop))

    def on_assigned(self, assigned: Iterable[Any]) -> None:
        """Remember the new assignment; the next tick applies it (outside the
        rebalance callback, under the lock)."""
        name = self.topics.customer_events
        self.assigned = frozenset(tp.partition for tp in assigned if tp.topic == name)
        self.reassigned = True

    # --- blocking steps, run in a worker thread under the lock ----------------------

    def _handle(self, batch: Sequence[bytes]) -> None:
        try:
            self.projector.handle(batch)
        except WireError:
            # Only our relay writes this topic, so this is a bug or a foreign writer:
            # keep the valid messages flowing and say loudly which ones were skipped.
            valid = []
            for message in batch:
                try:
                    parse_customer_event(message)
                except WireError as exc:
                    log.error("projector: skipping a malformed customer event: %s", exc)
                else:
                    valid.append(message)
            self.projector.handle(valid)

    def _tick(self, now: datetime) -> None:
        owned = self._owned()
        if self.reassigned and owned is not None:
            self.reassigned = False
            dropped = self.projector.retain(owned)
            if dropped:
                log.info("projector: dropped %d customers no longer owned", dropped)
        if self.due is not None:
            rows = [row for row in self.due(now) if owned is None or owned(row[0])]
            self.projector.resume(rows)
        self.projector.tick(now)

    def _owned(self) -> Callable[[str], bool] | None:
        assigned = self.assigned
        if assigned is None or self.partition_of is None:
            return None
        count = self.app.consumer.topic_partitions(self.topics.customer_events)
        if not count:
            return None
        partition_of = self.partition_of
        return lambda customer_id: partition_of(customer_id.encode(), count) in assigned

    # --- lifecycle --------------------------------------------------------------------

    async def run(
        self, stop: threading.Event, *, poll: float = 0.1, stop_timeout: float = 15.0
    ) -> None:
        """Start the app, serve until ``stop`` is set, then stop it. Raises if the app
        crashed, so a supervisor can restart it.

        faust's stop waits for in-flight messages to be acknowledged; a batch that can
        never be handled (its agent crashed) would make it wait forever, so the wait is
        bounded: unacknowledged messages are simply not committed, and redelivered.
        Not with `asyncio.wait_for`, which after its timeout waits on until the
        cancelled stop has ended (unbounded, if the stop does not end)."""
        await self.app.start()
        try:
            while not stop.is_set() and not self.app.should_stop:
                await asyncio.sleep(poll)
        finally:
            stopping = asyncio.ensure_future(self.app.stop())
            done, _ = await asyncio.wait({stopping}, timeout=stop_timeout)
            if not done:
                stopping.add_done_callback(_retrieved)
                stopping.cancel()
                log.error("projector: faust did not stop within %.0f s", stop_timeout)
        if self.app.crashed and not stop.is_set():
            raise RuntimeError(f"the projector app crashed: {self.app.crash_reason!r}")


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Read an abandoned task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def new_app(
    *, app_id: str, bootstrap: str, session_timeout: float, heartbeat_interval: float, datadir: str
) -> faust.App:
    """The faust app the projector runs on (`FETCH_MAX_WAIT_MS`, tables in memory, our
    topics only): `build_app`'s, and bench.transport's do-nothing agent's ceiling."""
    return _App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in bootstrap.split(",")],
        store="memory://",  # tables are caches; PostgreSQL holds the truth
        datadir=datadir,
        web_enabled=False,
        topic_allow_declare=False,  # topics come from ensure_topics, with our counts
        topic_disable_leader=True,
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic read as raw key and value bytes (decoded by the projector itself)."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def build_app(
    *,
    app_id: str,
    bootstrap: str,
    topics: StreamTopics,
    projector_factory: Callable[[ChangePublisher], Projector],
    publish_changes: Callable[[Sequence[Record]], object],
    due: DueRows | None = None,
    partition_of: Callable[[bytes, int], int] | None = None,
    batch_size: int = 500,
    within: float = 0.05,
    max_tick_delay: float = 15.0,
    tick_interval: float = 1.0,
    session_timeout: float = 6.0,
    heartbeat_interval: float = 1.0,
    retry: RetryBatch,
    clock: Callable[[], datetime],
    datadir: str | None = None,
) -> ProjectorApp:
    """Wire a faust app around a fresh projector (build it inside the event loop that
    will run it).

    ``projector_factory`` gets the `ChangePublisher` that routes changes to their topics
    through ``publish_changes`` (send all, flush, raise on any failure). ``due`` and
    ``partition_of`` (the producer's key partitioner: ``(key, partitions) ->
    partition``) enable resuming timers and dropping customers after a rebalance;
    without them every held customer is kept and nothing is re-adopted.
    Session timeout and heartbeat (seconds) set how fast a group join is on the
    embedded broker (docs/streams-notes.md): 2.0 / 0.5 in tests, 6 / 1 locally.
    ``datadir`` is where faust keeps its (unused: tables live in memory) table
    directory; faust's default is ``<app id>-data`` in the working directory.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    app = new_app(
        app_id=app_id,
        bootstrap=bootstrap,
        session_timeout=session_timeout,
        heartbeat_interval=heartbeat_interval,
        datadir=datadir or f"{app_id}-data",
    )
    publisher = TopicChangePublisher(topics, publish_changes)
    served = ProjectorApp(
        app=app,
        projector=projector_factory(publisher),
        topics=topics,
        due=due,
        partition_of=partition_of,
        clock=clock,
        retry=retry,
        batch_size=batch_size,
        max_tick_delay=max_tick_delay,
    )
    source = raw_topic(app, topics.customer_events)

    async def project(stream: faust.StreamT[bytes]) -> None:
        # Acknowledged (so committed) once projected, not before: `stream.take` acks a
        # batch when its generator is closed, also when the agent ends mid-batch (the
        # app stopping or crashing while the batch is retried), and the next worker
        # then starts past events nobody applied (seen after a PostgreSQL restart).
        concrete = cast("faust.Stream[bytes]", stream)
        batches = cast(  # `noack_take` yields the events (annotated: the values)
            "AsyncIterator[Sequence[EventT[bytes]]]",
            concrete.noack_take(batch_size, within=within),
        )
        async for events in batches:
            await served.project([event.value for event in events])
            for event in events:
                await concrete.ack(event)

    async def tick() -> None:
        await served.tick()

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        served.on_assigned(args[0] if args else ())

    # One agent instance per worker (concurrency=1): RELIABILITY, faust #606.
    app.agent(source, name=f"{app_id}.project", concurrency=1)(project)
    app.timer(tick_interval, name=f"{app_id}.tick")(tick)
    app.on_partitions_assigned.connect(on_assigned, sender=app)
    return served
