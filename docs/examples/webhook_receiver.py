"""A webhook receiver for eventcrm's churn alerts: verifies each delivery's signature,
ignores repeats by idempotency key, and prints the alert. Standard library only.

    export EVENTCRM_WEBHOOK_SECRET=whsec_...   # what `eventcrm webhook add` printed
    python docs/examples/webhook_receiver.py --port 8099
    eventcrm webhook add http://127.0.0.1:8099/hooks --levels warning,critical

Answer 2xx only once the alert is safely handled: anything else (or no answer within
10 s) makes eventcrm send it again later, with backoff. Deliveries come at least once,
so keep the idempotency keys you have handled (here in memory; use your database).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE_HEADER = "Eventcrm-Signature"
IDEMPOTENCY_HEADER = "Eventcrm-Idempotency-Key"
TOLERANCE_SECONDS = 300


def verify(secret: str, header: str | None, body: bytes, *, now: float | None = None) -> bool:
    """True if ``header`` (``t=TIMESTAMP,v1=HEX[,v1=...]``) signs ``body`` with ``secret``
    and its timestamp is within five minutes of now (a replayed old delivery fails)."""
    if not header:
        return False
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in fields if name == "t" and value.isdigit()]
    signatures = [value for name, _, value in fields if name == "v1"]
    if len(stamps) != 1 or not signatures:
        return False
    now = time.time() if now is None else now
    if abs(now - int(stamps[0])) > TOLERANCE_SECONDS:
        return False
    signed = stamps[0].encode() + b"." + body  # the raw body, exactly as received
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def make_server(
    host: str, port: int, secret: str, on_alert: Callable[[dict[str, Any]], None]
) -> ThreadingHTTPServer:
    """A server that calls ``on_alert`` once per new verified delivery; if it raises,
    the delivery is answered 500 and eventcrm retries it."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: eventcrm reuses its connection

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not verify(secret, self.headers.get(SIGNATURE_HEADER), body):
                self._answer(401)
                return
            key = self.headers.get(IDEMPOTENCY_HEADER, "")
            with lock:
                if key in seen:
                    self._answer(200)  # a repeat: already handled
                    return
            try:
                on_alert(json.loads(body))
            except Exception:  # noqa: BLE001 - any failure: let eventcrm retry
                self._answer(500)
                return
            with lock:
                seen.add(key)
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    secret = os.environ["EVENTCRM_WEBHOOK_SECRET"]

    def show(delivery: dict[str, Any]) -> None:
        print(
            f"{delivery['effective_at']} {delivery['customer_id']} {delivery['alert_id']}"
            f" {delivery['transition']} ({delivery['level']})",
            flush=True,
        )

    server = make_server(args.host, args.port, secret, show)
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
