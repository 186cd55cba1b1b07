"""`HttpPublisher`'s requests, as a local HTTP server receives them: the path, the Bearer
token, one object or a batch as a JSON array, the API's answer handed back, and its
errors raised with their code. (Against the real API: tests of the `api` role.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adapters.publisher import HttpPublisher, HttpPublishError
from domain.errors import InvalidInteraction

pytestmark = pytest.mark.integration

ITEM: dict[str, Any] = {
    "event_id": "e-1",
    "source": "shop",
    "customer_id": "c-1",
    "kind": "purchase",
    "occurred_at": "2026-10-01T10:00:00Z",
    "amount": "19.90",
    "currency": "EUR",
}


class FakeApi(ThreadingHTTPServer):
    """Answers as `POST /v1/interactions` does: 202 with an outcome per item, 401 for a
    wrong token, 413 over the size limit."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        if self.headers.get("Authorization") != "Bearer good-token":
            self._answer(401, {"code": "unauthorized", "message": "no such token"})
        elif len(body) > 2000:
            self._answer(413, {"code": "too_large", "message": "over the limit"})
        else:
            items = json.loads(body)
            items = items if isinstance(items, list) else [items]
            self._answer(202, {"results": [{"outcome": "recorded"} for _ in items]})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(api: FakeApi) -> str:
    return f"http://127.0.0.1:{api.server_address[1]}/"


def test_one_interaction_is_posted_as_an_object_with_the_bearer_token(api: FakeApi) -> None:
    with HttpPublisher(url_of(api), "good-token") as publisher:
        answer = publisher.publish(ITEM)
    assert answer == {"results": [{"outcome": "recorded"}]}
    [request] = api.requests
    assert request["path"] == "/v1/interactions"
    assert request["headers"]["Authorization"] == "Bearer good-token"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == ITEM


def test_a_batch_is_posted_as_one_json_array_in_order(api: FakeApi) -> None:
    batch = [{**ITEM, "event_id": f"e-{n}"} for n in range(3)]
    with HttpPublisher(url_of(api), "good-token") as publisher:
        answer = publisher.publish_batch(batch)
    assert len(answer["results"]) == 3
    [request] = api.requests
    assert request["body"] == batch


def test_an_invalid_item_is_refused_before_anything_is_sent(api: FakeApi) -> None:
    batch = [ITEM, {**ITEM, "event_id": "e-2", "kind": "teleported"}]
    with (
        HttpPublisher(url_of(api), "good-token") as publisher,
        pytest.raises(InvalidInteraction) as refused,
    ):
        publisher.publish_batch(batch)
    assert refused.value.first.code == "unknown_kind"
    assert api.requests == []


@pytest.mark.parametrize(
    ("token", "size", "status", "code"),
    [("bad-token", 1, 401, "unauthorized"), ("good-token", 40, 413, "too_large")],
)
def test_a_refused_request_raises_with_the_api_status_and_code(
    api: FakeApi, token: str, size: int, status: int, code: str
) -> None:
    batch = [{**ITEM, "event_id": f"e-{n}"} for n in range(size)]
    with (
        HttpPublisher(url_of(api), token) as publisher,
        pytest.raises(HttpPublishError) as refused,
    ):
        publisher.publish_batch(batch)
    assert (refused.value.status, refused.value.code) == (status, code)
