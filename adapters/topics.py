"""The Kafka topics eventcrm uses, and their idempotent provisioning.

Provisioning is idempotent because it runs at every start and again after a broker
lost its data (Tansu restarts empty; a real cluster can be rebuilt): existing topics
are left exactly as they are — except an incarnation the caller allows to be replaced
(`ensure_topics`'s ``replace``: after a wipe, one a client re-created with the
broker's default partition count, of a topic the pipeline rebuilds anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

log = logging.getLogger(__name__)

KEYED_PARTITIONS: Final = 12
"""Partitions of the customer-keyed work topics (`interactions`, `customer-events`).

Partitions are the unit of parallelism (one consumer of a group per partition, one
eventsourcing tracking record per topic-partition) and per-customer order holds only
within one. Adding partitions later re-maps keys to partitions while old records still
sit in the old ones, breaking per-customer order during the change, so the count is
chosen once with headroom: 12 splits evenly over 1, 2, 3, 4, 6 or 12 workers. Both
topics get the same count so the ingest and projector stages scale alike, and faust
gives its changelog topics the count of the source topic.
"""

CHANGE_PARTITIONS: Final = 3
"""Partitions of the change topics (`churn-alerts`, `tier-changes`, `lifecycle-changes`).

Their volume is a small fraction of the interactions (only transitions are published)
and their readers are ops tools and webhooks; three keeps per-customer order by key
and a little parallelism without many near-empty partitions to poll.
"""

DLQ_PARTITIONS: Final = 1
"""The dead-letter topic is rare and read by people and tools in arrival order."""

TANSU_AUTO_CREATED_PARTITIONS: Final = 4
"""The partition count Tansu 0.6.0 gives a topic it creates by itself, on any client's
metadata request naming it (docs/streams-notes.md): after a wipe, whichever client
touches a topic before the pipeline re-provisions it leaves it with this count."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic name, under one prefix so several deployments can share a cluster."""

    prefix: str = "eventcrm."

    @property
    def interactions(self) -> str:
        """Upstream interactions, key = customer id (the wire contract)."""
        return f"{self.prefix}interactions"

    @property
    def interactions_dlq(self) -> str:
        """Rejected interactions with the reason and the original bytes."""
        return f"{self.prefix}interactions.dlq"

    @property
    def customer_events(self) -> str:
        """Recorded events published by the relay, key = customer id."""
        return f"{self.prefix}customer-events"

    @property
    def churn_alerts(self) -> str:
        return f"{self.prefix}churn-alerts"

    @property
    def tier_changes(self) -> str:
        return f"{self.prefix}tier-changes"

    @property
    def lifecycle_changes(self) -> str:
        return f"{self.prefix}lifecycle-changes"

    @property
    def checkpoints(self) -> str:
        """Checkpoint roots over every chain head (`eventcrm checkpoint`), kept outside
        the database (docs/verify.md)."""
        return f"{self.prefix}checkpoints"

    def change_topic(self, kind: str) -> str:
        """Where a change of this kind (`projections.Change.kind`) is published."""
        return {
            "tier": self.tier_changes,
            "lifecycle": self.lifecycle_changes,
            "alert": self.churn_alerts,
        }[kind]

    def changes(self) -> tuple[str, ...]:
        """The change topics, whose messages are re-announced after a reset (ADR 15)."""
        return (self.churn_alerts, self.tier_changes, self.lifecycle_changes)

    def rebuilt(self) -> tuple[str, ...]:
        """The topics whose content the pipeline publishes again on a new incarnation
        after a broker wipe (ADR 11, 15): `customer-events` and the DLQ from the store,
        the change topics by re-announcement. Only these may be deleted and created
        again when a client re-created them with the wrong partition count
        (`ensure_topics`'s ``replace``); `interactions` holds upstream's records, which
        nobody could publish again, and `checkpoints` holds heads kept outside the
        database."""
        return (self.customer_events, self.interactions_dlq, *self.changes())

    def all(self) -> tuple[str, ...]:
        return (
            self.interactions,
            self.interactions_dlq,
            self.customer_events,
            self.churn_alerts,
            self.tier_changes,
            self.lifecycle_changes,
            self.checkpoints,
        )

    def partitions(self) -> dict[str, int]:
        """The default partition count of every topic (see the module's constants)."""
        return {
            self.interactions: KEYED_PARTITIONS,
            self.interactions_dlq: DLQ_PARTITIONS,
            self.customer_events: KEYED_PARTITIONS,
            self.churn_alerts: CHANGE_PARTITIONS,
            self.tier_changes: CHANGE_PARTITIONS,
            self.lifecycle_changes: CHANGE_PARTITIONS,
            self.checkpoints: DLQ_PARTITIONS,
        }


REPAIR_ROUNDS: Final = 5
"""Describe-and-fix rounds `ensure_topics` makes before it gives up on a count."""

ReplaceCheck = Callable[[str, str], bool]
"""``(topic, topic id) -> bool``: may this incarnation of the topic be deleted and
created again with the wanted partition count?"""


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: Mapping[str, int] | int,
    replication: int = 1,
    timeout_s: float = 30.0,
    replace: ReplaceCheck | None = None,
) -> frozenset[str]:
    """Create the topics that do not exist yet; return the names it created.

    Existing topics are kept as they are, even with another partition count (changing
    it would re-map keys; that is an operator's decision, so it is only logged) —
    unless ``replace`` says that incarnation may go: then it is deleted *by its topic
    id* (so only that incarnation, never one created meanwhile by another process) and
    created again with the wanted count. That is for a topic a client re-created with
    the broker's default count after a wipe (Tansu auto-creates topics on any client's
    metadata request and cannot be told not to; it has no CreatePartitions), whose
    content the pipeline rebuilds anyway (ADR 11). A topic created concurrently by
    someone else counts as existing. Returns once every named topic has a leader for
    each partition, so producers started next do not race the broker's metadata.
    """
    wanted = list(dict.fromkeys(names))
    counts = {name: _count(partitions, name) for name in wanted}
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="eventcrm-topics",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    created: set[str] = set()
    try:
        for _ in range(REPAIR_ROUNDS):
            existing = {topic["name"]: topic for topic in admin.describe_topics()}
            wrong = {
                name: str(existing[name]["topic_id"])
                for name in wanted
                if name in existing
                and _partitions_of(existing[name]) != counts[name]
                and existing[name].get("topic_id")
                and replace is not None
                and replace(name, str(existing[name]["topic_id"]))
            }
            missing = [name for name in wanted if name not in existing or name in wrong]
            if not missing:
                break
            _delete(admin, wrong, existing, counts, timeout_ms)
            created |= _create(admin, missing, counts, replication, timeout_ms)
        existing = {topic["name"]: topic for topic in admin.describe_topics()}
        for name in wanted:
            if name in existing and _partitions_of(existing[name]) != counts[name]:
                log.warning(
                    "topic %s exists with %d partitions, %d wanted; left as is",
                    name,
                    _partitions_of(existing[name]),
                    counts[name],
                )
        admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
    finally:
        admin.close()
    return frozenset(created)


def _partitions_of(described: Mapping[str, Any]) -> int:
    return len(described.get("partitions") or ())


def _delete(
    admin: KafkaAdminClient,
    ids: Mapping[str, str],
    existing: Mapping[str, Mapping[str, Any]],
    counts: Mapping[str, int],
    timeout_ms: int,
) -> None:
    """Delete these incarnations by topic id; one already gone is not an error."""
    if not ids:
        return
    for name, topic_id in sorted(ids.items()):
        log.warning(
            "topic %s was re-created by a client with %d partitions (%d wanted) after the "
            "broker lost its data; deleting that incarnation (%s) to create it again",
            name,
            _partitions_of(existing[name]),
            counts[name],
            topic_id,
        )
    response = admin.delete_topics(
        [UUID(topic_id) for topic_id in ids.values()], timeout_ms=timeout_ms, raise_errors=False
    )
    for result in response["topics"]:
        error = for_code(result["error_code"])
        if error.errno not in {0, UnknownTopicOrPartitionError.errno}:
            raise error(f"deleting topic {result.get('name') or result.get('topic_id')!r} failed")


def _count(partitions: Mapping[str, int] | int, name: str) -> int:
    count = partitions if isinstance(partitions, int) else partitions.get(name)
    if count is None:
        raise ValueError(f"no partition count given for topic {name!r}")
    if count < 1:
        raise ValueError(f"topic {name!r}: partition count must be at least 1, not {count}")
    return count


def _create(
    admin: KafkaAdminClient,
    names: list[str],
    counts: Mapping[str, int],
    replication: int,
    timeout_ms: int,
) -> frozenset[str]:
    if not names:
        return frozenset()
    request: dict[str, dict[str, Any]] = {
        name: {"num_partitions": counts[name], "replication_factor": replication} for name in names
    }
    response = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
    created: set[str] = set()
    for result in response["topics"]:
        error = for_code(result["error_code"])
        if error is TopicAlreadyExistsError:
            continue
        if error.errno != 0:
            message = result.get("error_message") or error.description
            raise error(f"creating topic {result['name']!r} failed: {message}")
        created.add(result["name"])
    log.info("created topics %s", sorted(created))
    return frozenset(created)


class TopicWatch:
    """Tells when the broker lost topics: Kafka is disposable (DESIGN, RELIABILITY).

    A topic re-created after the broker lost its data (Tansu's memory store after a
    restart; a rebuilt cluster) gets a new topic id, and its offsets start at 0 again.
    Nothing else says so: Tansu answers a fetch past the new log end with no records
    and no error (docs/streams-notes.md). So every position kept across the reset — a
    consumer's in memory, the ingest's in PostgreSQL, the relay's — would silently
    skip records. The topic id is therefore the *incarnation* of a topic: positions
    are kept per incarnation, and a change of any id means "restart the clients".

    Metadata requests do not make Tansu auto-create topics, so polling is harmless.
    """

    def __init__(self, bootstrap: str, names: Iterable[str], *, timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._names = list(dict.fromkeys(names))
        self._timeout_ms = int(timeout_s * 1000)
        self._admin: KafkaAdminClient | None = None

    def ids(self) -> dict[str, str | None]:
        """Each topic's id now (None: the topic does not exist, or the broker does not
        report ids). Raises a `kafka.errors.KafkaError` if the broker cannot be asked."""
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                client_id="eventcrm-watch",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        try:
            described = self._admin.describe_topics(self._names)
        except Exception:
            self.close()
            raise
        found = {
            topic["name"]: (str(topic["topic_id"]) if topic.get("topic_id") else None)
            for topic in described
            if topic.get("error_code", 0) == 0
        }
        return {name: found.get(name) for name in self._names}

    def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            admin.close()


def incarnation_of(topic_id: str | None) -> str:
    """The incarnation tag of a topic in position names ("" if the broker gives no ids)."""
    return "" if topic_id is None or topic_id.strip("0-") == "" else topic_id


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    start: Mapping[int, int] | None = None,
    idle_s: float = 1.0,
    timeout_s: float = 120.0,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` (from ``start[partition]``, default the beginning), read
    without a consumer group, in per-partition order.

    The end of a partition is found by consuming, never trusted from `end_offsets()`:
    Tansu reports the base offset of the last record batch there, not the log end
    (docs/streams-notes.md). Reading stops once every partition is at or past its
    reported end and nothing arrived for ``idle_s`` seconds. Call it only for a topic
    that exists: fetching a missing one makes Tansu create it with 4 partitions.
    """
    client = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000) + 1000,
        fetch_max_wait_ms=100,
    )
    try:
        partitions = _partitions(client, topic)
        if not partitions:
            return []
        client.assign(partitions)
        for tp in partitions:
            offset = (start or {}).get(tp.partition)
            if offset is None:
                client.seek_to_beginning(tp)
            else:
                client.seek(tp, offset)
        reported = client.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            polled = client.poll(timeout_ms=200)
            for batch in polled.values():
                records.extend(batch)
            if polled:
                quiet_since = time.monotonic()
            at_end = all(client.position(tp) >= reported.get(tp, 0) for tp in partitions)
            if at_end and time.monotonic() - quiet_since >= idle_s:
                return sorted(records, key=lambda r: (r.partition, r.offset))
        raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s:.0f} s")
    finally:
        client.close()


def log_ends(bootstrap: str, topic: str, *, idle_s: float = 1.0) -> dict[int, int]:
    """Each partition's log end (the next offset to be written), found by reading from
    the reported end offset, which on Tansu is the start of the last batch."""
    client = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = _partitions(client, topic)
        reported = {tp.partition: offset for tp, offset in client.end_offsets(partitions).items()}
    finally:
        client.close()
    ends = dict(reported)
    for record in read_topic(bootstrap, topic, start=reported, idle_s=idle_s):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return ends


def _partitions(client: KafkaConsumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(client.partitions_for_topic(topic) or ())]
