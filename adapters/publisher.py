"""The publisher SDK for upstream teams: send interactions to eventcrm over Kafka or HTTP.

Both publishers validate each interaction first against the same contract the ingest
applies (`domain.interactions.parse_interaction`, after the same wire checks: size,
UTF-8 JSON object), so a mistake raises `InvalidInteraction` with the same codes at the
caller instead of becoming a dead letter later. docs/publishing.md shows both in use.

- `Publisher(bootstrap)` sends to the `interactions` topic with the settings that make
  Kafka delivery safe: `enable_idempotence=True` (a retried send is written once per
  producer session) and `acks="all"` (acknowledged by every in-sync replica). Key = the
  customer id, so one customer's interactions stay in order. Re-publishing the same
  `(source, event_id)` is harmless: eventcrm stores it once.
- `HttpPublisher(url, token)` POSTs to `/v1/interactions` with a Bearer token (role
  `producer`); the answer lists each item's outcome: `recorded`, `duplicate` or
  `rejected` with its codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

import httpx
import orjson
from kafka import KafkaProducer

from adapters.codec import decode_wire
from domain.errors import InvalidInteraction
from domain.interactions import parse_interaction

DEFAULT_TOPIC: Final = "eventcrm.interactions"
DEFAULT_SKEW: Final = timedelta(minutes=5)
"""eventcrm's default `EVENTCRM_MAX_FUTURE_SKEW_SECONDS`: the client checks no looser."""


def encode(
    interaction: Mapping[str, Any],
    *,
    now: datetime | None = None,
    max_future_skew: timedelta = DEFAULT_SKEW,
) -> tuple[str, bytes]:
    """Validate one interaction as eventcrm's ingest does; return its key (the customer
    id) and its wire bytes. Raises `InvalidInteraction` listing every problem."""
    data = orjson.dumps(dict(interaction))
    parsed = parse_interaction(
        decode_wire(data), now=now or datetime.now(UTC), max_future_skew=max_future_skew
    )
    return parsed.customer_id, data


class Publisher:
    """Publishes interactions to eventcrm's Kafka topic; use as a context manager or call
    `close()`. `publish` returns once the broker acknowledged the record."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = DEFAULT_TOPIC,
        max_future_skew: timedelta = DEFAULT_SKEW,
        timeout_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        **producer_config: Any,
    ) -> None:
        for unsafe in ("enable_idempotence", "acks"):
            if unsafe in producer_config:
                raise ValueError(f"{unsafe} is fixed by the Publisher (idempotence, acks=all)")
        self.topic = topic
        self._skew = max_future_skew
        self._timeout_s = timeout_s
        self._clock = clock
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            client_id="eventcrm-publisher",
            **{"linger_ms": 5, **producer_config},
        )
        # kafka-python turns idempotence off when another setting conflicts with it;
        # with it set explicitly a conflict raises above, and this guards the rest.
        if self._producer.config["enable_idempotence"] is not True:  # pragma: no cover
            self._producer.close()
            raise ValueError("the producer settings conflict with idempotence")

    def publish(self, interaction: Mapping[str, Any]) -> tuple[int, int]:
        """Validate, send and wait for the acknowledgement; returns (partition, offset)."""
        key, value = encode(interaction, now=self._clock(), max_future_skew=self._skew)
        future = self._producer.send(self.topic, key=key.encode(), value=value)
        metadata = future.get(timeout=self._timeout_s)
        return int(metadata.partition), int(metadata.offset)

    def publish_many(self, interactions: Iterable[Mapping[str, Any]]) -> int:
        """Validate every one first (nothing is sent if any is invalid), then send them
        all and wait for every acknowledgement; returns how many were sent."""
        now = self._clock()
        encoded = [encode(i, now=now, max_future_skew=self._skew) for i in interactions]
        futures = [
            self._producer.send(self.topic, key=key.encode(), value=value) for key, value in encoded
        ]
        self._producer.flush(timeout=self._timeout_s)
        for future in futures:
            future.get(timeout=0)
        return len(futures)

    def close(self) -> None:
        self._producer.close(timeout=self._timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class HttpPublishError(RuntimeError):
    """The API refused the request as a whole (401, 403, 413, 400, 5xx): its error body's
    ``code`` and ``message``, and the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} [{code}]: {message}")
        self.status = status
        self.code = code
        self.message = message


class HttpPublisher:
    """Publishes interactions to eventcrm's HTTP API, `POST {url}/v1/interactions`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_future_skew: timedelta = DEFAULT_SKEW,
        timeout_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/v1/interactions"
        self._skew = max_future_skew
        self._clock = clock
        self._client = httpx.Client(
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": "eventcrm-publisher/1",
            },
            transport=transport,
        )

    def publish(self, interaction: Mapping[str, Any]) -> Any:
        """Send one interaction; returns the API's answer (its outcome)."""
        _, value = encode(interaction, now=self._clock(), max_future_skew=self._skew)
        return self._post(value)

    def publish_batch(self, interactions: Sequence[Mapping[str, Any]]) -> Any:
        """Send a batch as one JSON array; returns the API's answer (an outcome per item,
        in order). Every item is validated first: nothing is sent if any is invalid."""
        now = self._clock()
        for interaction in interactions:
            encode(interaction, now=now, max_future_skew=self._skew)
        return self._post(orjson.dumps([dict(i) for i in interactions]))

    def _post(self, body: bytes) -> Any:
        response = self._client.post(
            self.endpoint, content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code not in {200, 202}:
            try:
                error = response.json()
            except ValueError:
                error = {}
            if not isinstance(error, dict):
                error = {}
            raise HttpPublishError(
                response.status_code,
                str(error.get("code", "http_error")),
                str(error.get("message", response.text[:200])),
            )
        return response.json()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["HttpPublishError", "HttpPublisher", "InvalidInteraction", "Publisher", "encode"]
