"""The relay role: a transactional outbox from the store to Kafka.

It follows the store's notification log and publishes every recorded event to
`customer-events` (key = customer id) with its global position and customer version,
then — only after the producer's flush — stores its own position. At least once, in
per-customer order; a repeat is byte-identical, and consumers dedupe by version. The
dead letters table is relayed the same way to the DLQ topic. Exactly one relay is
active: it holds a PostgreSQL advisory lock on a connection of its own, and a second
relay waits as a hot standby.

Positions are kept per *incarnation* of each topic (its topic id, see
`adapters.topics.TopicWatch`). When the broker lost its data, the re-created
`customer-events` is a new incarnation without a position: the relay starts it at the
first stored event that no read model has applied yet (``needed_from``), so the
projectors get back everything the lost topic still owed them and nothing they have
(a redelivered duplicate would be ignored anyway). A new DLQ incarnation gets every
dead letter again: a repeat is allowed there, a loss is not. Every dead letter is
relayed, whatever rejected it, so `applied + dead-lettered == published` holds for
anyone counting the DLQ topic (RELIABILITY G11).
"""

from __future__ import annotations

import logging
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import Tracking
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from psycopg.sql import SQL, Identifier

from adapters.readside import IDENTITY_LINK, customer_id_of, input_event
from adapters.recorder import DEAD_LETTERS_TABLE, EVENTS_TABLE
from adapters.store import CustomerStore
from projections.identity import IDENTITY_KINDS, IDENTITY_MERGED
from projections.messages import encode_customer_event
from projections.model import InputEvent

DELIVERY_TIMEOUT: Final = 30.0
"""Seconds a batch may take to reach the broker before the relay gives up on this
producer (the role restarts with a new one). After a broker wipe a producer can be left
unable to send (its producer id refused): without a bound, ``flush`` waited forever."""


def deliver(
    producer: KafkaProducer,
    sent: list[FutureRecordMetadata],
    *,
    timeout: float = DELIVERY_TIMEOUT,
    until: threading.Event | None = None,
) -> None:
    """Wait until the broker has every message sent, or raise: the first failed send's
    error, or `KafkaTimeoutError` — after ``timeout``, or as soon as ``until`` is set
    (the role's life ended: after a broker wipe the watcher restarts it on the new
    incarnation, and waiting out the timeout only delayed that). A position moves past
    messages only after this, so a send that failed is sent again, never skipped."""
    deadline = time.monotonic() + timeout
    step = timeout if until is None else 0.5
    while True:
        try:
            producer.flush(timeout=max(0.0, min(step, deadline - time.monotonic())))
            break
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise
            if until is not None and until.is_set():
                raise KafkaTimeoutError("delivery abandoned: the role is stopping") from None
    for future in sent:
        future.get(timeout=0)


log = logging.getLogger(__name__)

EVENTS_POSITION = "relay:customer-events"
DLQ_POSITION = "relay:dlq"
"""The dead-letter outbox position. Until every dead letter was relayed (earlier, only
those with a Kafka topic in their provenance were), it was ``relay:dead-letters``; the
new name makes an upgraded relay publish the ones it had skipped (a repeat is allowed
on the DLQ topic, a loss is not)."""


def position_name(base: str, incarnation: str = "") -> str:
    """``EVENTS_POSITION`` or ``DLQ_POSITION`` for one incarnation of its topic."""
    return f"{base}@{incarnation}" if incarnation else base


def starting_position(needed_from: Callable[[], int | None], store: CustomerStore) -> int:
    """The position a new `customer-events` incarnation starts after: just before the
    first stored event a projector still needs, or, if none is owed, the last one."""
    first = needed_from()
    if first is not None:
        return first - 1
    last: int | None = store.recorder.max_notification_id()
    return last or 0


LOCK_KEY = 0x6576_6372_6D72  # "evcrmr": the relay's advisory lock


class RelayLockedError(RuntimeError):
    """Another relay holds the lock; this one stands by."""


class Relay:
    """Publishes the notification log and the dead letters; one active per store."""

    def __init__(
        self,
        store: CustomerStore,
        producer: KafkaProducer,
        *,
        events_topic: str,
        dlq_topic: str,
        conninfo: str,
        batch_size: int = 2000,
        idle_wait: float = 1.0,
        events_incarnation: str = "",
        dlq_incarnation: str = "",
        needed_from: Callable[[], int | None] | None = None,
        reannounce: Callable[[KafkaProducer], object] | None = None,
    ) -> None:
        """``needed_from`` returns the lowest notification id some projector still
        needs (None: none): where a new `customer-events` incarnation starts. Without
        it, a new incarnation starts at the beginning of the log. ``reannounce``
        (`adapters.reannounce.Reannouncer.run`) runs once the relay leads, before it
        publishes anything: after a broker wipe it re-publishes what the lost change
        topics may have carried."""
        self._store = store
        self._producer = producer
        self._events_topic = events_topic
        self._dlq_topic = dlq_topic
        self._conninfo = conninfo
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._customer_ids: dict[UUID, str] = {}
        self._survivor_of: dict[str, str] | None = None
        """Merged customer -> survivor as of the last published notification: the key
        its events are published under (docs/identity.md)."""
        self.events_position_name = position_name(EVENTS_POSITION, events_incarnation)
        self.dlq_position_name = position_name(DLQ_POSITION, dlq_incarnation)
        self._needed_from = needed_from
        self._reannounce = reannounce
        self._events_at: int | None = None
        """The events position, cached: this relay is its only writer while it leads."""
        self._stop: threading.Event | None = None
        """The stop event of `run`, while it runs: a delivery gives up once it is set."""
        schema = store.datastore.schema
        self._first_event = SQL(
            "SELECT originator_id, topic, state FROM {} "
            "WHERE originator_id = ANY(%b) AND originator_version = 1"
        ).format(Identifier(schema, EVENTS_TABLE))
        self._dead_letters = SQL(
            "SELECT id, code, field, message, rejections, payload, source, event_id, "
            "customer_id, provenance, erased_at FROM {} WHERE id > %s ORDER BY id LIMIT %s"
        ).format(Identifier(schema, DEAD_LETTERS_TABLE))

    @contextmanager
    def leadership(self) -> Iterator[psycopg.Connection[Any]]:
        """Hold the advisory lock (and a LISTEN) on a dedicated connection."""
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if not row or not row[0]:
                raise RelayLockedError("another relay is active")
            conn.execute(SQL("LISTEN {}").format(Identifier(EVENTS_TABLE)))
            yield conn

    def position(self) -> int:
        """The last notification published to this incarnation of `customer-events`."""
        if self._events_at is None:
            self._events_at = self._store.position(self.events_position_name)
        if self._events_at is None:
            self._events_at = self._starting_position()
        return self._events_at

    def _starting_position(self) -> int:
        if self._needed_from is None:
            return 0
        start = starting_position(self._needed_from, self._store)
        # A first start begins at 1; anything later means a reset replaced the topic.
        log.log(
            logging.WARNING if start else logging.INFO,
            "relay: %s has no position (a new topic incarnation); publishing from "
            "notification %d, the first one a projector still needs",
            self.events_position_name,
            start + 1,
        )
        return start

    def publish_events(self) -> int:
        """Publish the next batch of notifications; returns how many were published."""
        start = self.position() + 1
        notifications = self._store.recorder.select_notifications(
            start=start, limit=self._batch_size
        )
        if not notifications:
            return 0
        decode = self._store.state_transcoder.decode
        decoded = [(n, decode(n.state)) for n in notifications]
        sent: list[FutureRecordMetadata] = []
        self._learn_customer_ids(decoded)
        survivor_of = dict(self._links(start - 1))  # kept only once the batch is flushed
        for notification, state in decoded:
            originator = notification.originator_id
            assert isinstance(originator, UUID)
            customer_id = self._customer_ids[originator]
            event = input_event(notification.originator_version, notification.topic, state)
            key = survivor_of.get(customer_id, customer_id)
            if event is not None and event.kind in IDENTITY_KINDS:
                key = str(event.facts["survivor"])
                follow_link(survivor_of, event)
            value = orjson.dumps(
                encode_customer_event(
                    position=notification.id,
                    customer_id=customer_id,
                    version=notification.originator_version,
                    stored_type=notification.topic.rsplit(".", 1)[-1],
                    event=event,
                )
            )
            sent.append(self._producer.send(self._events_topic, key=key.encode(), value=value))
        deliver(self._producer, sent, until=self._stop)
        self._set_position(self.events_position_name, notifications[-1].id)
        self._events_at = notifications[-1].id
        self._survivor_of = survivor_of
        return len(notifications)

    def _links(self, through: int) -> dict[str, str]:
        """The links in force after notification ``through`` (read once, then followed)."""
        if self._survivor_of is None:
            survivor_of: dict[str, str] = {}
            for position, state in self._store.identity_links():
                if position <= through:
                    follow_link(survivor_of, input_event(0, IDENTITY_LINK, state))
            self._survivor_of = survivor_of
        return self._survivor_of

    def publish_dead_letters(self) -> int:
        """Publish the next batch of dead letters, whatever path rejected them (ingest,
        the store's conflict check, import): each message says what it was — its code,
        its idempotency key when it had one, and where it came from (``provenance``:
        topic, partition, offset and key for Kafka; the line for an import; null for a
        direct `CustomerStore.record` call)."""
        start = self._store.position(self.dlq_position_name) or 0
        with self._store.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._dead_letters, (start, self._batch_size))
            rows = curs.fetchall()
        if not rows:
            return 0
        sent: list[FutureRecordMetadata] = []
        for row in rows:
            value = orjson.dumps(
                {
                    "dead_letter_id": row["id"],
                    "code": row["code"],
                    "field": row["field"],
                    "message": row["message"],
                    "rejections": row["rejections"],
                    "original": b64encode(bytes(row["payload"])).decode("ascii"),
                    "source": row["source"],
                    "event_id": row["event_id"],
                    "customer_id": row["customer_id"],
                    "provenance": row["provenance"],
                    "erased": row["erased_at"] is not None,
                }
            )
            key = row["customer_id"].encode() if row["customer_id"] else None
            sent.append(self._producer.send(self._dlq_topic, key=key, value=value))
        deliver(self._producer, sent, until=self._stop)
        self._set_position(self.dlq_position_name, rows[-1]["id"])
        return len(rows)

    def _set_position(self, name: str, value: int) -> None:
        self._store.recorder.insert_tracking(Tracking(name, value))  # type: ignore[attr-defined]

    def _learn_customer_ids(self, decoded: list[tuple[Any, dict[str, Any]]]) -> None:
        unknown: set[UUID] = set()
        for notification, state in decoded:
            customer_id = customer_id_of(notification.topic, state)
            if customer_id is not None:
                self._customer_ids[notification.originator_id] = customer_id
            elif notification.originator_id not in self._customer_ids:
                unknown.add(notification.originator_id)
        if unknown:
            decode = self._store.state_transcoder.decode
            with self._store.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self._first_event, (list(unknown),))
                for row in curs.fetchall():
                    customer_id = customer_id_of(row["topic"], decode(bytes(row["state"])))
                    if customer_id is not None:
                        self._customer_ids[row["originator_id"]] = customer_id

    def run(self, stop: threading.Event) -> None:
        """Publish until stopped; woken by NOTIFY, polling as the fallback."""
        self._stop = stop
        with self.leadership() as conn:
            self._events_at = None  # re-read: another relay may have led meanwhile
            self._survivor_of = None
            if self._reannounce is not None:
                self._reannounce(self._producer)
            while not stop.is_set():
                published = self.publish_events() + self.publish_dead_letters()
                if published == 0:
                    for _ in conn.notifies(timeout=self._idle_wait, stop_after=1):
                        pass


def follow_link(survivor_of: dict[str, str], event: InputEvent | None) -> None:
    """Apply one merge or unmerge to the merged -> survivor map."""
    if event is None or event.kind not in IDENTITY_KINDS:
        return
    merged = str(event.facts["merged"])
    if event.kind == IDENTITY_MERGED:
        survivor_of[merged] = str(event.facts["survivor"])
    else:
        survivor_of.pop(merged, None)
