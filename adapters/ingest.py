"""The ingest role: Kafka `interactions` → the event store, with exactly-once effect.

Each polled batch is recorded with `CustomerStore.record`, and the highest offset of
every topic-partition in it is stored as an eventsourcing tracking position in the same
transaction. On (re)assignment the consumer seeks to the stored position + 1: Kafka's
committed offsets are written too, but only as lag metrics, never trusted. Invalid
records become dead letters in the same transaction (published to the DLQ topic by the
relay's dead-letter outbox), so none is lost and none blocks its partition.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import PersistenceError, Tracking
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from adapters.retry import STORE_UNAVAILABLE, RetryPolicy
from adapters.store import CustomerStore, Item, Outcome, StalePositionError

log = logging.getLogger(__name__)


def position_name(topic: str, partition: int, incarnation: str = "") -> str:
    """The tracking name of one topic-partition (the position is its last applied offset).

    ``incarnation`` is the topic's id (`adapters.topics.TopicWatch`): a topic re-created
    after the broker lost its data starts again at offset 0, under fresh names, so a
    position from before the reset can never make the new records look consumed.
    """
    name = f"{topic}@{incarnation}" if incarnation else topic
    return f"ingest:{name}:{partition}"


@dataclass
class BatchResult:
    records: int
    outcomes: list[Outcome]


class _SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._ingest.seek_to_stored(list(assigned))


class Ingest:
    """Consumes interactions in batches and records them; one instance per consumer."""

    def __init__(
        self,
        store: CustomerStore,
        consumer: KafkaConsumer,
        *,
        topic: str,
        batch_size: int,
        poll_timeout_ms: int = 200,
        on_batch: Callable[[BatchResult], None] = lambda result: None,
        retry: RetryPolicy = STORE_UNAVAILABLE,
        incarnation: str = "",
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._topic = topic
        self._batch_size = batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._on_batch = on_batch
        self._retry = retry
        self._incarnation = incarnation

    def start(self) -> None:
        # By an exact pattern, not by name: a consumer subscribed by name asks for the
        # topic's metadata by name, and after a broker wipe Tansu answers that by
        # creating `interactions` with its default 4 partitions before the pipeline
        # re-provisions it with 12 (measured: within a second; a pattern subscription
        # asks for every topic's metadata, which creates none).
        self._consumer.subscribe(
            pattern=f"^{re.escape(self._topic)}$", listener=_SeekToStoredPositions(self)
        )

    def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            stored = self._store.position(self._position_name(tp))
            if stored is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored + 1)

    def _position_name(self, tp: TopicPartition) -> str:
        return position_name(tp.topic, tp.partition, self._incarnation)

    def step(self) -> BatchResult:
        """Poll one batch and record it; on a store failure rewind it and raise (`run`
        tries again after a pause)."""
        polled = self._consumer.poll(timeout_ms=self._poll_timeout_ms, max_records=self._batch_size)
        records = [record for batch in polled.values() for record in batch]
        if not records:
            return BatchResult(0, [])
        items = [
            Item(
                record.value if record.value is not None else b"",
                provenance={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": None if record.key is None else record.key.decode("utf-8", "replace"),
                },
            )
            for record in records
        ]
        last: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            last[tp] = max(last.get(tp, -1), record.offset)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        positions = [Tracking(self._position_name(tp), o) for tp, o in last.items()]
        try:
            outcomes = self._store.record(items, positions=positions)
        except StalePositionError:
            # Another consumer (or our previous life) applied this already: resync.
            log.warning("ingest: batch already applied; seeking to stored positions")
            self.seek_to_stored(list(last))
            return BatchResult(0, [])
        except PersistenceError:
            for tp, offset in first.items():
                self._consumer.seek(tp, offset)
            raise
        self._commit_advisory(last)
        result = BatchResult(len(records), outcomes)
        self._on_batch(result)
        return result

    def _commit_advisory(self, last: dict[TopicPartition, int]) -> None:
        """Kafka-side offsets, for lag dashboards only; a failure here changes nothing."""
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}
            )
        except Exception as exc:  # noqa: BLE001 - advisory by design
            log.debug("ingest: advisory offset commit failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        self.start()
        attempts = self._retry.retrying("ingest: a batch", on=PersistenceError, until=stop)
        try:
            while not stop.is_set():
                attempts(self.step)
        except PersistenceError:
            if not stop.is_set():
                raise
        finally:
            self._consumer.close()
