"""Webhook delivery: how fast the outbox drains to a local receiver.

Printed beside, from the same run and the same receiver (the docs' example, verifying
each signature):
- the ceiling: signed POSTs of the same bodies on one kept-alive httpx client, with no
  database at all (what the HTTP leg alone allows);
- a naive peer: the same POSTs opening a new connection each (`httpx.post`), no database.

The deliverer does one PostgreSQL transaction per delivery (claim, send, mark), so the
gap to the ceiling is the price of "never lost, never silently dropped".

    python -m bench.webhooks [DELIVERIES]
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from adapters.crypto import MasterKey
from adapters.webhooks import Deliverer, add_subscription, enqueue, notification_of, sign
from bench.common import MASTER_KEY, app_url, line, scratch, server, settings
from infra.bootstrap import build_store

SECRET = "whsec_bench"


def receiver() -> tuple[Any, list[int]]:
    path = Path(__file__).parents[1] / "docs" / "examples" / "webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("webhook_receiver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    count = [0]

    def on_alert(_: dict[str, Any]) -> None:
        count[0] += 1

    running = module.make_server("127.0.0.1", 0, SECRET, on_alert)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    return running, count


def message(n: int) -> dict[str, Any]:
    return {
        "change_id": f"chg-{n:024x}",
        "customer_id": f"c-{n}",
        "kind": "alert",
        "from_value": "none",
        "to_value": "raised",
        "effective_at": "2026-05-30T10:00:00+00:00",
        "reasons": [{"rule": "alert.raised", "inputs": {"score": "60.0", "level": "warning"}}],
        "policy_version": "bench",
        "event_ids": [],
        "alert_id": f"alert-{n:024x}",
    }


def signed(body: bytes, key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Eventcrm-Signature": sign(SECRET, int(time.time()), body),
        "Eventcrm-Idempotency-Key": key,
    }


def main() -> None:
    deliveries = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    running, received = receiver()
    url = f"http://127.0.0.1:{running.server_address[1]}/hooks"
    notifications = [notification_of(message(n)) for n in range(deliveries)]
    bodies = [n.body("warning") for n in notifications if n is not None]

    with httpx.Client() as client:
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            client.post(url, content=body, headers=signed(body, f"ceiling-{i}"))
        ceiling = len(bodies) / (time.perf_counter() - started)

    started = time.perf_counter()
    for i, body in enumerate(bodies):
        httpx.post(url, content=body, headers=signed(body, f"naive-{i}"))
    naive = len(bodies) / (time.perf_counter() - started)

    with server() as admin, scratch(admin) as owner:
        config = settings(owner)
        store = build_store(config, app_url(owner), MasterKey.from_text(MASTER_KEY))
        try:
            add_subscription(
                store.datastore,
                store.master_key,
                url=url,
                levels="warning",
                secret=SECRET,
                secret_source="bench",
            )
            with store.datastore.transaction(commit=True) as curs:
                for notification in notifications:
                    assert notification is not None
                    enqueue(curs, notification)
            before = received[0]
            with httpx.Client() as client:
                deliverer = Deliverer(store.datastore, store.master_key, client, clock=store.clock)
                started = time.perf_counter()
                sent = 0
                while sent < deliveries:
                    sent += deliverer.deliver_due(limit=500)
                outbox = sent / (time.perf_counter() - started)
            assert received[0] - before == deliveries, "every delivery verified and new"
        finally:
            store.close()
    running.shutdown()

    print(f"webhook deliveries to a local receiver ({deliveries}, one subscription)")
    line(
        "webhooks",
        "ceiling: signed POSTs, kept-alive, no database",
        ceiling,
        "deliveries/s",
        ceiling=ceiling,
    )
    line(
        "webhooks", "naive peer: a new connection per POST", naive, "deliveries/s", ceiling=ceiling
    )
    line(
        "webhooks",
        "outbox deliverer (claim, POST, mark: 1 tx each)",
        outbox,
        "deliveries/s",
        ceiling=ceiling,
    )


if __name__ == "__main__":
    main()
