"""Publish interactions to eventcrm with the publisher SDK, over Kafka or over HTTP.

    python docs/examples/publish.py kafka --bootstrap 127.0.0.1:9092
    python docs/examples/publish.py http --url http://127.0.0.1:8080 --token "$TOKEN"

Each interaction is validated before it leaves (the same contract and codes as eventcrm's
ingest); the deliberately broken one at the end shows the rejection.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from adapters.publisher import HttpPublisher, InvalidInteraction, Publisher


def interactions(run: str) -> list[dict[str, object]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"example-{run}-1",
            "source": "shop",
            "customer_id": f"example-{run}",
            "kind": "registered",
            "occurred_at": now,
        },
        {
            "event_id": f"example-{run}-2",
            "source": "shop",
            "customer_id": f"example-{run}",
            "kind": "purchase",
            "occurred_at": now,
            "amount": "49.90",
            "currency": "EUR",
        },
    ]


BROKEN = {
    "event_id": "example-broken",
    "source": "shop",
    "customer_id": "example",
    "kind": "purchase",
    "occurred_at": "2026-01-01T00:00:00Z",
    "amount": "12.345",
    "currency": "euro",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("channel", choices=["kafka", "http"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="eventcrm.interactions")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default="")
    parser.add_argument("--run", default=datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    args = parser.parse_args()
    items = interactions(args.run)
    if args.channel == "kafka":
        with Publisher(args.bootstrap, topic=args.topic) as publisher:
            for item in items:
                partition, offset = publisher.publish(item)
                print(f"published {item['event_id']} to partition {partition} at {offset}")
            try:
                publisher.publish(BROKEN)
            except InvalidInteraction as exc:
                for rejection in exc.rejections:
                    print(f"rejected before sending: {rejection.code} ({rejection.field})")
    else:
        with HttpPublisher(args.url, args.token) as publisher:
            print(publisher.publish_batch(items))
            try:
                publisher.publish(BROKEN)
            except InvalidInteraction as exc:
                for rejection in exc.rejections:
                    print(f"rejected before sending: {rejection.code} ({rejection.field})")


if __name__ == "__main__":
    main()
