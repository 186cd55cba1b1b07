"""Transport ceilings: what Kafka and faust alone sustain on this machine, this run.

    python -m bench.transport     (part of `make bench`; bench.pipeline prints them too)

The pipeline's rates mean little without the rates of the parts it cannot be faster
than. On the embedded broker, with the clients and settings the pipeline uses:

- produce:  kafka-python `infra.kafka.producer` (idempotent, acks=all, linger 5 ms),
            N messages of the `customer-events` size, sent and flushed;
- consume:  kafka-python `infra.kafka.consumer` settings (read_committed, fetch wait
            100 ms), the same N messages from the start of an assigned topic;
- faust:    a faust agent on the projector's own app class (`streams.app._App`,
            ``stream.take(500, within=0.05)``) that does nothing with its batches:
            from the first publish until every message went through the agent, group
            join excluded (a warm-up message goes through first).

Each figure is messages/s; the pipeline carries about 1.9 messages per interaction
through Kafka (`interactions` in, `customer-events` out, plus its change messages).

Knob: BENCH_TRANSPORT_MESSAGES (default 100,000).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import faust
from kafka import KafkaConsumer, TopicPartition

from adapters.topics import ensure_topics
from bench.common import line
from infra import kafka
from infra.broker import embedded_broker
from streams.app import FETCH_MAX_WAIT_MS, QUIET_LOGGERS, new_app, raw_topic

MESSAGES = int(os.environ.get("BENCH_TRANSPORT_MESSAGES", "100000"))
PARTITIONS = 12
VALUE_SIZE = 420
"""About the size of a relayed `customer-events` message (bench.projections prints it)."""


@dataclass(frozen=True)
class Transport:
    """messages/s of each ceiling, measured on one broker in one run."""

    produce: float
    consume: float
    faust: float
    messages: int


def _payloads(count: int) -> list[tuple[bytes, bytes]]:
    body = b"x" * VALUE_SIZE
    return [(f"customer-{n % 20_000:06d}".encode(), body) for n in range(count)]


def produce_rate(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> float:
    producer = kafka.producer(bootstrap)
    try:
        producer.send(topic, key=b"warm", value=b"up").get(timeout=30)
        started = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        return len(messages) / (time.perf_counter() - started)
    finally:
        producer.close(timeout=5)


def consume_rate(bootstrap: str, topic: str, count: int) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        seen = 0
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while seen < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        consumer.close()


def faust_rate(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> float:
    """messages/s through a faust agent that does nothing, on the projector's app class
    and batch settings, from the first publish until the last message reached it."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    seen = 0
    done = threading.Event()
    warm = threading.Event()
    target = len(messages) + 1  # the warm-up message counts

    scratch = tempfile.mkdtemp(prefix="bench-noop-")

    async def main() -> None:
        app = new_app(
            app_id=f"bench-noop-{uuid.uuid4().hex[:6]}",
            bootstrap=bootstrap,
            session_timeout=2.0,
            heartbeat_interval=0.5,
            datadir=scratch,
        )
        source = raw_topic(app, topic)

        async def noop(stream: faust.StreamT[bytes]) -> None:
            nonlocal seen
            async for batch in stream.take(500, within=0.05):
                seen += len(batch)
                warm.set()
                if seen >= target:
                    done.set()

        app.agent(source, name="noop", concurrency=1)(noop)
        await app.start()
        try:
            while not done.is_set():
                await asyncio.sleep(0.05)
        finally:
            await asyncio.wait_for(app.stop(), 15)

    runner = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    runner.start()
    producer = kafka.producer(bootstrap)
    try:
        producer.send(topic, key=b"warm", value=b"up").get(timeout=30)
        if not warm.wait(60):
            raise RuntimeError("the do-nothing faust agent never received its warm-up message")
        started = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        if not done.wait(300):
            raise RuntimeError(f"the do-nothing faust agent saw {seen:,} of {target:,}")
        return len(messages) / (time.perf_counter() - started)
    finally:
        producer.close(timeout=5)
        runner.join(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


def measure(bootstrap: str, count: int = MESSAGES) -> Transport:
    """The three ceilings on ``bootstrap``, each on its own fresh topic."""
    messages = _payloads(count)
    prefix = f"t{uuid.uuid4().hex[:6]}."
    plain, agent = prefix + "plain", prefix + "agent"
    ensure_topics(bootstrap, [plain, agent], partitions={plain: PARTITIONS, agent: PARTITIONS})
    produce = produce_rate(bootstrap, plain, messages)
    consume = consume_rate(bootstrap, plain, count + 1)
    return Transport(produce, consume, faust_rate(bootstrap, agent, messages), count)


def report(transport: Transport) -> None:
    n = transport.messages
    for what, rate in (
        (f"kafka-python produce, {n:,} x {VALUE_SIZE} B, acks=all", transport.produce),
        (f"kafka-python consume, {n:,} messages", transport.consume),
        (f"faust agent doing nothing, {n:,} messages", transport.faust),
    ):
        line("ceiling", what, rate, "messages/s", ceiling=rate)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    print(f"# eventcrm transport ceilings, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    with embedded_broker() as broker:
        report(measure(broker.bootstrap))


if __name__ == "__main__":
    main()
