""" "What did we know then" (issue 10, item 3): `--known-at K` beside `--as-of T`.

The oracle: what `customer`, `replay`, `export` and `alerts list` answer as known at K,
after late events arrived, equals what they answered at K, before those arrived."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import StoreFactory, alerting_policy
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

AS_OF = "2025-09-01T00:00:00+00:00"


def purchase(customer: str, month: int, amount: str = "400.00") -> dict[str, Any]:
    return {
        "event_id": f"{customer}-p{month}",
        "source": "shop",
        "customer_id": customer,
        "kind": "purchase",
        "occurred_at": f"2025-{month:02d}-10T10:00:00Z",
        "amount": amount,
        "currency": "EUR",
    }


def answers(url: str, *extra: str) -> dict[str, Any]:
    def cli(*args: str) -> str:
        return run(url, *args, policy=alerting_policy()).stdout

    return {
        "customer": json.loads(cli("customer", "ka-1", "--as-of", AS_OF, *extra, "--json")),
        "replay": [
            {k: v for k, v in step.items() if k not in {"recorded_at", "late"}}
            for step in json.loads(cli("replay", "ka-1", "--as-of", AS_OF, *extra, "--json"))[
                "steps"
            ]
        ],
        "export": sorted(cli("export", "--as-of", AS_OF, *extra, "--format", "jsonl").splitlines()),
        "alerts": json.loads(cli("alerts", "list", "--as-of", AS_OF, *extra, "--json")),
    }


def test_the_answer_as_known_at_k_is_the_answer_given_at_k(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    url = fresh_database_url
    store = make_store(url)
    store.record([purchase(c, m) for c in ("ka-1", "ka-2") for m in range(1, 6)])
    time.sleep(0.01)
    known_at = datetime.now(UTC)
    then = answers(url)
    assert then["alerts"], "silence since May: the alerting policy has raised an alert"
    time.sleep(0.01)

    # Late arrivals: a purchase in August and a refund in March, recorded now; a
    # customer first seen now, with a history back in February.
    store.record(
        [
            purchase("ka-1", 8),
            {**purchase("ka-1", 3), "event_id": "ka-1-r3", "kind": "refund"},
            purchase("ka-3", 2),
        ]
    )
    now = answers(url)
    assert now != then, "the late events change today's answer"
    assert now["customer"] != then["customer"]

    assert answers(url, "--known-at", known_at.isoformat()) == then

    steps = json.loads(
        run(url, "replay", "ka-1", "--as-of", AS_OF, "--json", policy=alerting_policy()).stdout
    )["steps"]
    late = {s["event_id"] for s in steps if s["late"]}
    assert late == {"shop/ka-1-r3"}, "the March refund arrived after the May purchase"
    refund = next(s for s in steps if s["event_id"] == "shop/ka-1-r3")
    assert datetime.fromisoformat(refund["recorded_at"]) > known_at
    assert refund["at"].startswith("2025-03-10")
    text = run(url, "replay", "ka-1", "--as-of", AS_OF, policy=alerting_policy()).stdout
    assert "LATE" in text

    before = run(url, "customer", "ka-3", "--known-at", known_at.isoformat(), check=False)
    assert before.returncode == 1, "ka-3 was unknown at K"
