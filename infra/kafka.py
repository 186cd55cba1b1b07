"""Kafka clients with the settings eventcrm relies on (see docs/streams-notes.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0
"""Seconds a producer's pending sends get when it is closed; then they are abandoned."""

if TYPE_CHECKING:  # faust stays unimported until a command runs the streaming stack
    from streams.app import Record


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """Idempotent, acks=all: a retried send never duplicates within a producer session.

    `enable_idempotence=True` is set explicitly: kafka-python silently drops idempotence
    when another setting conflicts, and with it set a conflict raises instead.
    """
    client = KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        **{"linger_ms": 5, "batch_size": 64 * 1024, **overrides},
    )
    if client.config["enable_idempotence"] is not True:  # pragma: no cover - guard
        raise RuntimeError("kafka-python dropped enable_idempotence")
    return client


def close_producer(client: KafkaProducer, *, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close ``client``, giving its pending sends at most ``timeout`` seconds.

    kafka-python's ``close()`` first flushes: without a timeout it waits forever, and
    with one it raises `KafkaTimeoutError` and leaves the producer open, its I/O thread
    still retrying. After a broker wipe an idempotent producer can be left with batches
    that never complete (waiting on a producer id the new broker never gives): the
    relay's ``close()`` then hung for good, its role never restarted, and the pipeline
    stalled (docs/faults.md). So on a timeout the I/O thread is closed by force: the
    pending sends fail (nobody counts them as delivered: positions move only after
    `adapters.relay.deliver`) and the producer is closed.
    """
    try:
        client.close(timeout=timeout)
        return
    except KafkaTimeoutError:
        log.warning("a Kafka producer could not deliver within %.0f s; closed by force", timeout)
    sender = getattr(client, "_sender", None)  # kafka-python has no public force-close
    if sender is not None:
        sender.force_close()  # its thread fails every pending batch, then ends
        sender.join(max(timeout, 1.0))
    try:
        client.close(timeout=0)
    except KafkaTimeoutError:
        log.error("a Kafka producer still had pending sends after a forced close")


def consumer(
    bootstrap: str, *, group_id: str, session_timeout_ms: int = 6000, **overrides: Any
) -> KafkaConsumer:
    """A group consumer whose positions live elsewhere (PostgreSQL): no auto-commit,
    read_committed. A first group join takes about half the session timeout. Fetches
    wait at most 100 ms for data (default 500: on Tansu a hop then cost p50 ~120 /
    p99 ~260 ms, against 13 / 53 at 100; bench/pipeline.py)."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(200, session_timeout_ms // 4),
        max_poll_interval_ms=max(10_000, session_timeout_ms * 5),
        **{"fetch_max_wait_ms": 100, **overrides},
    )


class KafkaRecordPublisher:
    """Sends change records with a kafka-python producer and returns only once all of
    them are acknowledged: the `publish_changes` of `streams.app.build_app`.

    A failed send replaces the producer before the error goes up (the projector then
    retries the batch): an idempotent producer whose broker lost its producer ids is
    failed for good (docs/streams-notes.md), and retrying with it would never succeed.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = 30.0) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._client = producer(bootstrap)

    def __call__(self, records: Sequence[Record]) -> None:
        client = self._client
        try:
            futures = [client.send(topic, key=key, value=value) for topic, key, value in records]
            client.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=0)  # raises the send's error, if any
        except Exception:
            self._client = producer(self._bootstrap)
            close_producer(client, timeout=0)
            raise

    def close(self) -> None:
        close_producer(self._client)
