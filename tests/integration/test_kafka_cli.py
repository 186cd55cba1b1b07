"""`eventcrm publish` and `eventcrm alerts tail` against a real (embedded) broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from adapters.topics import TopicNames, ensure_topics
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import producer
from tests.integration.test_ingest_relay import read_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def eventcrm(broker: EmbeddedBroker, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EVENTCRM_KAFKA_BOOTSTRAP": broker.bootstrap,
        "EVENTCRM_TOPIC_PREFIX": prefix,
    }
    command = [str(Path(sys.executable).parent / "eventcrm"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=60)


def test_publish_sends_every_line_keyed_by_customer(broker: EmbeddedBroker, tmp_path: Path) -> None:
    names = TopicNames(prefix=f"p{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=dict.fromkeys(names.all(), 3))
    lines = [orjson.dumps({"customer_id": f"c-{n % 4}", "event_id": str(n)}) for n in range(50)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([*lines, b"{not json"]) + b"\n")

    result = eventcrm(broker, names.prefix, "publish", str(path))

    assert "published 51 messages" in result.stderr
    records = read_all(broker.bootstrap, names.interactions)
    assert sorted(r.value for r in records) == sorted([*lines, b"{not json"])
    assert {r.key for r in records} == {b"c-0", b"c-1", b"c-2", b"c-3", None}


def test_alerts_tail_prints_the_alerts_on_the_topic(broker: EmbeddedBroker) -> None:
    names = TopicNames(prefix=f"a{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=dict.fromkeys(names.all(), 3))
    change = {
        "customer_id": "c-9",
        "kind": "alert",
        "from_value": "none",
        "to_value": "raised",
        "effective_at": "2026-01-01T00:00:00+00:00",
        "reasons": [{"message": "churn score 55 (warning)"}],
        "alert_id": "alert-abc",
    }
    client = producer(broker.bootstrap)
    client.send(names.churn_alerts, key=b"c-9", value=orjson.dumps(change))
    client.flush()
    client.close()

    result = eventcrm(
        broker, names.prefix, "alerts", "tail", "--from-beginning", "--limit", "1", "--json"
    )
    assert orjson.loads(result.stdout.strip()) == change
