"""The outbound contract against real messages: everything a pipeline run published on
`churn-alerts`, `tier-changes`, `lifecycle-changes`, `customer-events` and the DLQ topic
validates against its topic's committed JSON Schema; the subscriber example in
docs/examples opens one ticket per alert however often a message is redelivered; and
the publisher SDK that fed the run got every interaction stored."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.outbound import TOPICS, validator
from adapters.publisher import Publisher
from adapters.simulate import simulate
from adapters.topics import CHANGE_PARTITIONS, ensure_topics
from domain.errors import InvalidInteraction
from infra.kafka import producer
from tests.integration.alerting import AlertingRun
from tests.integration.test_ingest_relay import read_all
from tests.integration.test_pipeline import END

pytestmark = pytest.mark.integration

SUBSCRIBER = Path(__file__).parents[2] / "docs" / "examples" / "churn_alert_subscriber.py"


def test_every_message_the_pipeline_published_validates_against_its_topic_schema(
    alerting: AlertingRun,
) -> None:
    counts: dict[str, int] = {}
    for topic in TOPICS:
        check = validator(topic)
        messages = [orjson.loads(r.value) for r in alerting.messages(alerting.names.prefix + topic)]
        counts[topic] = len(messages)
        for message in messages:
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(message)]
            assert errors == [], (topic, message)
        # The check can fail: a message missing its first required field is refused.
        broken = dict(messages[0])
        del broken[check.schema["required"][0]]
        assert not check.is_valid(broken)
    assert all(counts.values()), counts
    kinds = {m["to_value"] for m in map(orjson.loads, _values(alerting, "churn-alerts"))}
    assert {"raised", "escalated"} <= kinds


def _values(run: AlertingRun, topic: str) -> list[bytes]:
    return [r.value for r in run.messages(run.names.prefix + topic)]


def test_the_subscriber_example_opens_one_ticket_per_alert_despite_redeliveries(
    alerting: AlertingRun, tmp_path: Path
) -> None:
    alerts = [orjson.loads(v) for v in _values(alerting, "churn-alerts")]
    # A topic of the test's own: every alert, then a third of them again (redelivered).
    topic = f"sub{uuid.uuid4().hex[:8]}.churn-alerts"
    ensure_topics(alerting.bootstrap, [topic], partitions=CHANGE_PARTITIONS)
    client = producer(alerting.bootstrap)
    for message in [*alerts, *alerts[: len(alerts) // 3]]:
        client.send(topic, key=message["customer_id"].encode(), value=orjson.dumps(message))
    client.flush()
    client.close()
    assert len(read_all(alerting.bootstrap, topic, CHANGE_PARTITIONS, idle=1.0)) > len(alerts)

    state = tmp_path / "seen.json"
    command = [
        sys.executable,
        str(SUBSCRIBER),
        "--bootstrap",
        alerting.bootstrap,
        "--topic",
        topic,
        "--state",
        str(state),
        "--exit-when-idle",
        "3",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    lines = first.stdout.splitlines()
    opened = Counter(line.split()[1] for line in lines if line.startswith("NEW "))
    assert set(opened) == {m["alert_id"] for m in alerts}
    assert set(opened.values()) == {1}, "one ticket per alert"
    updates = [line for line in lines if line.startswith("UPDATE ")]
    assert len(opened) + len(updates) == len({m["change_id"] for m in alerts})

    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert again.stdout == "", "a restarted subscriber remembers what it handled"


def test_the_publisher_sdk_got_every_interaction_of_the_run_stored(
    alerting: AlertingRun,
) -> None:
    interactions = simulate(customers=50, seed=31, end=END).interactions
    unique = {(i["source"], i["event_id"]) for i in interactions}
    assert len(unique) < len(interactions), "the simulation repeats some sends"
    assert alerting.stored == len(unique)


def test_the_publisher_refuses_an_invalid_interaction_before_sending_it(
    alerting: AlertingRun,
) -> None:
    topic = f"pub{uuid.uuid4().hex[:8]}.interactions"
    ensure_topics(alerting.bootstrap, [topic], partitions=1)
    bad: dict[str, Any] = {
        "event_id": "e-1",
        "source": "shop",
        "customer_id": "c-1",
        "kind": "purchase",
        "occurred_at": "2026-10-01T10:00:00Z",
        "amount": "1.999",
        "currency": "eur",
    }
    good = {**bad, "amount": "1.99", "currency": "EUR"}
    with Publisher(alerting.bootstrap, topic=topic) as publisher:
        with pytest.raises(InvalidInteraction) as refused:
            publisher.publish(bad)
        assert {r.code for r in refused.value.rejections} == {"invalid_currency"}
        partition, offset = publisher.publish(good)
    assert (partition, offset) == (0, 0), "only the valid one was sent"
    [record] = read_all(alerting.bootstrap, topic, 1, idle=1.0)
    assert record.key == b"c-1"
    assert orjson.loads(record.value) == good


def test_the_publish_example_sends_and_shows_a_client_side_rejection(
    alerting: AlertingRun,
) -> None:
    topic = f"ex{uuid.uuid4().hex[:8]}.interactions"
    ensure_topics(alerting.bootstrap, [topic], partitions=1)
    example = Path(__file__).parents[2] / "docs" / "examples" / "publish.py"
    ran = subprocess.run(
        [
            sys.executable,
            str(example),
            "kafka",
            "--bootstrap",
            alerting.bootstrap,
            "--topic",
            topic,
            "--run",
            "t1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "published example-t1-1" in ran.stdout
    assert "rejected before sending: invalid_currency (currency)" in ran.stdout
    records = read_all(alerting.bootstrap, topic, 1, idle=1.0)
    assert [orjson.loads(r.value)["event_id"] for r in records] == ["example-t1-1", "example-t1-2"]


def test_schema_prints_each_topic_schema_and_the_input_contract_without_a_topic() -> None:
    eventcrm = str(Path(sys.executable).parent / "eventcrm")
    for topic in TOPICS:
        printed = subprocess.run(
            [eventcrm, "schema", "--topic", f"eventcrm.{topic}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert orjson.loads(printed.stdout)["$id"] == f"urn:eventcrm:topic:{topic}:v1"
    contract = subprocess.run(
        [eventcrm, "schema"], capture_output=True, text=True, timeout=60, check=True
    )
    assert orjson.loads(contract.stdout)["title"] == "eventcrm interaction"
