"""A subscriber of eventcrm's `churn-alerts` topic (kafka-python) that acts once per alert.

    python docs/examples/churn_alert_subscriber.py --bootstrap 127.0.0.1:9092

Messages come at least once (a projector restart or a broker wipe publishes some
again), so it deduplicates: a new `alert_id` opens one ticket (`NEW` line); a later
transition of a known alert updates it (`UPDATE` line), each `change_id` once. The
seen ids are kept in `--state` (a JSON file) so a restart does not open tickets twice.
Partitions are assigned by hand and read from the beginning: no consumer group.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def load_state(path: Path | None) -> dict[str, Any]:
    if path is not None and path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    return {"alerts": {}, "changes": []}


def handle(state: dict[str, Any], message: dict[str, Any]) -> str | None:
    """Apply one message; return the line to print, or None for a repeat."""
    if message["change_id"] in state["changes"]:
        return None
    state["changes"].append(message["change_id"])
    alert_id = message["alert_id"]
    if alert_id not in state["alerts"]:
        state["alerts"][alert_id] = message["to_value"]
        return f"NEW {alert_id} {message['customer_id']} {message['to_value']}"
    state["alerts"][alert_id] = message["to_value"]
    return f"UPDATE {alert_id} {message['to_value']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="eventcrm.churn-alerts")
    parser.add_argument("--state", type=Path, help="keep the seen ids in this JSON file")
    parser.add_argument(
        "--exit-when-idle", type=float, help="stop after this many seconds without a message"
    )
    args = parser.parse_args()
    state = load_state(args.state)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False)
    partitions = consumer.partitions_for_topic(args.topic) or set()
    assigned = [TopicPartition(args.topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    quiet_since = time.monotonic()
    try:
        while args.exit_when_idle is None or time.monotonic() - quiet_since < args.exit_when_idle:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    quiet_since = time.monotonic()
                    line = handle(state, json.loads(record.value))
                    if line:
                        print(line, flush=True)
                if args.state is not None:
                    args.state.write_text(json.dumps(state))
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
