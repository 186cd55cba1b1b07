"""Signed webhooks for churn alerts: subscriptions, the delivery outbox, and the deliverer.

The design is in docs/adr/0023-webhook-outbox-fed-from-churn-alerts.md; what a receiver
sees is in docs/webhooks.md. In short:

- **Subscriptions** (`webhook_subscriptions`) name a URL, the alert levels it wants and
  a signing secret, kept wrapped by the master key (the deliverer needs the secret
  itself to sign, so it cannot be stored hashed).
- **The feed** reads `churn-alerts` from positions kept in PostgreSQL and, in the same
  transaction that stores the new positions, inserts one outbox row per subscription
  that should hear of the transition (`webhook_deliveries`). The row's idempotency key
  is the alert id and the transition, unique per subscription, so a redelivered or
  re-announced message adds nothing.
- **The deliverer** claims due rows one at a time (`FOR UPDATE SKIP LOCKED`), POSTs the
  stored body signed as `t=TIMESTAMP,v1=HMAC-SHA256(secret, "TIMESTAMP.BODY")`, and
  marks it delivered in that same transaction. A crash before the commit leaves the
  row pending: it is sent again (at least once), never lost.
- **Failures** back off per subscription (the `webhook-delivery` policy of
  `adapters.retry`); after the policy's attempts in a row the subscription is marked
  `dead`, logged and listed as such, and its deliveries are kept and probed at the
  policy's longest wait until the endpoint answers again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
from eventsourcing.postgres import PostgresDatastore
from kafka import KafkaConsumer, TopicPartition

from adapters.crypto import CryptoError, MasterKey
from adapters.retry import WEBHOOK_DELIVERY, RetryPolicy
from domain.errors import UsageError

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "Eventcrm-Signature"
IDEMPOTENCY_HEADER: Final = "Eventcrm-Idempotency-Key"
DELIVERY_HEADER: Final = "Eventcrm-Delivery"
ATTEMPT_HEADER: Final = "Eventcrm-Attempt"
SIGNATURE_TOLERANCE_SECONDS: Final = 300
"""How old a signed timestamp a receiver accepts by default (replay protection)."""

LEVELS: Final = ("warning", "critical")
"""The churn levels an alert can be raised at: what a subscription chooses from."""
OPENING: Final = frozenset({"raised", "escalated"})
"""Transitions that announce an alert at a level (the others follow one)."""
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
LEADER_LOCK: Final = "eventcrm-webhooks"


# --- signing -----------------------------------------------------------------------


class SignatureError(ValueError):
    """A delivery whose signature header is missing, malformed, stale or wrong."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``t=TIMESTAMP,v1=HEX`` with HEX the HMAC-SHA256,
    keyed by the secret's UTF-8 bytes, of ``TIMESTAMP.BODY``."""
    digest = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> int:
    """Check a delivery as a receiver does; return its timestamp or raise
    `SignatureError`. Any ``v1`` entry may match (several appear while a secret rolls)."""
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t= and v1=")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("the signed timestamp is outside the tolerance")
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no v1 signature matches")
    return timestamp


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


# --- subscriptions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription as `webhook list` shows it (never with its secret)."""

    id: int
    url: str
    levels: tuple[str, ...]
    secret_source: str
    created_at: datetime
    status: str
    consecutive_failures: int
    dead_since: datetime | None
    last_error: str | None
    last_success_at: datetime | None
    pending: int
    delivered: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "levels": list(self.levels),
            "status": self.status,
            "consecutive_failures": self.consecutive_failures,
            "dead_since": None if self.dead_since is None else self.dead_since.isoformat(),
            "last_error": self.last_error,
            "last_success_at": (
                None if self.last_success_at is None else self.last_success_at.isoformat()
            ),
            "pending": self.pending,
            "delivered": self.delivered,
            "secret_source": self.secret_source,
            "created_at": self.created_at.isoformat(),
        }


def parse_levels(text: str | Iterable[str]) -> tuple[str, ...]:
    """``warning,critical`` (or a list) to the chosen levels, in the canonical order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(chosen - set(LEVELS))
    if unknown or not chosen:
        raise UsageError(
            f"unknown alert level(s) {', '.join(unknown) or '(none given)'}",
            code="invalid_levels",
            hint=f"choose one or more of {', '.join(LEVELS)}, separated by commas",
        )
    return tuple(level for level in LEVELS if level in chosen)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(
            f"not an http(s) URL: {url!r}",
            code="invalid_url",
            hint="give the receiver's full URL, e.g. https://ops.example.com/hooks/eventcrm",
        )
    return url


_LIST = (
    "SELECT s.id, s.url, s.levels, s.secret_source, s.created_at, s.status,"
    " s.consecutive_failures, s.dead_since, s.last_error, s.last_success_at,"
    " count(d.id) FILTER (WHERE d.state = 'pending') AS pending,"
    " count(d.id) FILTER (WHERE d.state = 'delivered') AS delivered"
    " FROM webhook_subscriptions s LEFT JOIN webhook_deliveries d ON d.subscription_id = s.id"
    " {where} GROUP BY s.id ORDER BY s.id"
)


def _subscription(row: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=int(row["id"]),
        url=row["url"],
        levels=tuple(row["levels"]),
        secret_source=row["secret_source"],
        created_at=row["created_at"],
        status=row["status"],
        consecutive_failures=int(row["consecutive_failures"]),
        dead_since=row["dead_since"],
        last_error=row["last_error"],
        last_success_at=row["last_success_at"],
        pending=int(row["pending"]),
        delivered=int(row["delivered"]),
    )


def add_subscription(
    datastore: PostgresDatastore,
    master_key: MasterKey,
    *,
    url: str,
    levels: Iterable[str] | str,
    secret: str,
    secret_source: str,
) -> Subscription:
    """Subscribe ``url`` to alerts at ``levels``, signing with ``secret`` (``secret_source``
    says where it came from, for `list`: ``generated`` or ``env:VAR``). Shared by the CLI
    and the HTTP API's admin endpoints."""
    check_url(url)
    chosen = parse_levels(levels)
    if not secret:
        raise UsageError("the signing secret is empty", code="invalid_secret")
    ref = uuid.uuid4()
    wrapped = master_key.wrap(ref, secret.encode())
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            "INSERT INTO webhook_subscriptions (url, levels, secret_ref, secret, secret_source)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (url, list(chosen), ref, wrapped, secret_source),
        )
        row = curs.fetchone()
    assert row is not None
    found = list_subscriptions(datastore, ids=[int(row["id"])])
    return found[0]


def list_subscriptions(
    datastore: PostgresDatastore, *, ids: Sequence[int] | None = None
) -> list[Subscription]:
    where = "" if ids is None else "WHERE s.id = ANY(%s)"
    with datastore.transaction(commit=False) as curs:
        curs.execute(_LIST.format(where=where), () if ids is None else (list(ids),))
        return [_subscription(row) for row in curs.fetchall()]


def remove_subscription(datastore: PostgresDatastore, ref: str | int) -> Subscription:
    """Remove one subscription, named by its id or its URL, with its undelivered
    deliveries (an explicit removal, so nothing is dropped silently)."""
    found = [
        s for s in list_subscriptions(datastore) if str(s.id) == str(ref).strip() or s.url == ref
    ]
    if not found:
        raise UsageError(
            f"no webhook subscription {ref!r}",
            code="unknown_webhook",
            hint="`eventcrm webhook list` shows the ids",
        )
    if len(found) > 1:
        raise UsageError(
            f"{len(found)} subscriptions have the URL {ref!r}",
            code="ambiguous_webhook",
            hint="name one by its id (`eventcrm webhook list`)",
        )
    with datastore.transaction(commit=True) as curs:
        curs.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (found[0].id,))
    return found[0]


# --- the feed: churn-alerts -> outbox ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """What one alert transition becomes in the outbox."""

    idempotency_key: str
    alert_id: str
    customer_id: str
    transition: str
    level: str | None
    """The level it announces (opening transitions), None for a follow-up."""
    message: Mapping[str, Any]

    def body(self, level: str) -> bytes:
        return orjson.dumps(
            {
                "type": f"churn_alert.{self.transition}",
                "idempotency_key": self.idempotency_key,
                "alert_id": self.alert_id,
                "customer_id": self.customer_id,
                "level": level,
                "transition": self.transition,
                "from": self.message.get("from_value"),
                "effective_at": self.message.get("effective_at"),
                "alert": self.message,
            }
        )


def notification_of(message: Mapping[str, Any]) -> Notification | None:
    """The outbox entry of one `churn-alerts` message; None if it is no alert change."""
    alert_id = message.get("alert_id")
    transition = message.get("to_value")
    customer_id = message.get("customer_id")
    effective_at = message.get("effective_at")
    if message.get("kind") != "alert" or not all(
        isinstance(v, str) and v for v in (alert_id, transition, customer_id, effective_at)
    ):
        return None
    assert isinstance(alert_id, str)
    assert isinstance(transition, str)
    assert isinstance(customer_id, str)
    level: str | None = None
    if transition in OPENING:
        level = "critical" if transition == "escalated" else "warning"
        reasons = message.get("reasons")
        if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
            stated = (reasons[0].get("inputs") or {}).get("level")
            if stated in LEVELS:
                level = stated
    return Notification(
        idempotency_key=f"{alert_id}/{transition}@{effective_at}",
        alert_id=alert_id,
        customer_id=customer_id,
        transition=transition,
        level=level,
        message=message,
    )


_ENQUEUE = (
    "INSERT INTO webhook_deliveries"
    " (subscription_id, idempotency_key, alert_id, customer_id, transition, level, body)"
    " SELECT s.id, %(key)s, %(alert)s, %(customer)s, %(transition)s, %(level)s, %(body)s"
    " FROM webhook_subscriptions s"
    " WHERE (%(opening)s AND %(level)s = ANY(s.levels))"
    " OR EXISTS (SELECT 1 FROM webhook_deliveries d"
    "            WHERE d.subscription_id = s.id AND d.alert_id = %(alert)s)"
    " ON CONFLICT (subscription_id, idempotency_key) DO NOTHING"
)


def enqueue(curs: psycopg.Cursor[Any], notification: Notification) -> int:
    """Add the outbox rows of one transition: for every subscription at its level, and
    (follow-ups and openings alike) every subscription already told of this alert.
    Returns how many rows were new."""
    level = notification.level
    if level is None:
        curs.execute(
            "SELECT level FROM webhook_deliveries WHERE alert_id = %s ORDER BY id DESC LIMIT 1",
            (notification.alert_id,),
        )
        row = curs.fetchone()
        if row is None:
            return 0  # nobody heard of this alert: nobody to follow it up with
        level = str(row["level"])
    curs.execute(
        _ENQUEUE,
        {
            "key": notification.idempotency_key,
            "alert": notification.alert_id,
            "customer": notification.customer_id,
            "transition": notification.transition,
            "level": level,
            "body": notification.body(level),
            "opening": notification.level is not None,
        },
    )
    return curs.rowcount


def position_name(topic: str, incarnation: str, partition: int) -> str:
    return f"{topic}@{incarnation}/{partition}" if incarnation else f"{topic}/{partition}"


class AlertFeed:
    """Reads `churn-alerts` by hand-assigned partitions from the positions stored in
    PostgreSQL (no consumer group: no join delay, and Kafka offsets stay advisory, as
    for every other reader here) and turns each poll into outbox rows and new
    positions, in one transaction."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        consumer: KafkaConsumer,
        *,
        topic: str,
        incarnation: str,
    ) -> None:
        self._datastore = datastore
        self._consumer = consumer
        self._topic = topic
        self._incarnation = incarnation
        self._assigned = False

    def _assign(self) -> bool:
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            return False
        assignment = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assignment)
        names = {
            position_name(self._topic, self._incarnation, tp.partition): tp for tp in assignment
        }
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT name, next_offset FROM webhook_positions WHERE name = ANY(%s)",
                (list(names),),
            )
            stored = {row["name"]: int(row["next_offset"]) for row in curs.fetchall()}
        for name, tp in names.items():
            if name in stored:
                self._consumer.seek(tp, stored[name])
            else:
                self._consumer.seek_to_beginning(tp)
        self._assigned = True
        return True

    def poll_once(self, timeout_ms: int) -> int:
        """One poll; returns how many messages it consumed."""
        if not self._assigned and not self._assign():
            time.sleep(timeout_ms / 1000)
            return 0
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=500)
        records = [record for batch in batches.values() for record in batch]
        if not records:
            return 0
        positions: dict[str, int] = {}
        with self._datastore.transaction(commit=True) as curs:
            for record in records:
                positions[position_name(self._topic, self._incarnation, record.partition)] = (
                    record.offset + 1
                )
                try:
                    message = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    message = None
                notification = notification_of(message) if isinstance(message, dict) else None
                if notification is None:
                    log.error(
                        "webhooks: %s[%d]@%d is not an alert change; skipped",
                        record.topic,
                        record.partition,
                        record.offset,
                    )
                    continue
                enqueue(curs, notification)
            curs.executemany(
                "INSERT INTO webhook_positions (name, next_offset) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
                list(positions.items()),
            )
        return len(records)


# --- the deliverer -------------------------------------------------------------------

_CLAIM = (
    "SELECT d.id, d.subscription_id, d.idempotency_key, d.body, d.attempts,"
    " s.url, s.secret_ref, s.secret, s.status, s.consecutive_failures"
    " FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id"
    " WHERE d.state = 'pending' AND d.next_attempt_at <= now()"
    " ORDER BY d.next_attempt_at, d.id LIMIT 1 FOR UPDATE OF d SKIP LOCKED"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None
    error: str | None


class Deliverer:
    """Sends due outbox rows, one transaction each (see the module's docstring)."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        master_key: MasterKey,
        client: httpx.Client,
        *,
        policy: RetryPolicy = WEBHOOK_DELIVERY,
        dead_after: int | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        self._datastore = datastore
        self._master_key = master_key
        self._client = client
        self._policy = policy
        self._dead_after = dead_after or policy.give_up_attempts or 10
        self._clock = clock
        self._secrets: dict[int, str] = {}

    def _secret(self, row: Mapping[str, Any]) -> str:
        subscription = int(row["subscription_id"])
        if subscription not in self._secrets:
            raw = self._master_key.unwrap(row["secret_ref"], bytes(row["secret"]))
            self._secrets[subscription] = raw.decode()
        return self._secrets[subscription]

    def post(self, row: Mapping[str, Any]) -> Outcome:
        body = bytes(row["body"])
        try:
            secret = self._secret(row)
        except CryptoError as exc:
            return Outcome(ok=False, status=None, error=f"cannot unwrap the secret: {exc}")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "eventcrm-webhooks/1",
            SIGNATURE_HEADER: sign(secret, int(self._clock().timestamp()), body),
            IDEMPOTENCY_HEADER: row["idempotency_key"],
            DELIVERY_HEADER: str(row["id"]),
            ATTEMPT_HEADER: str(int(row["attempts"]) + 1),
        }
        try:
            response = self._client.post(row["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(ok=False, status=None, error=f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Outcome(ok=True, status=response.status_code, error=None)
        return Outcome(ok=False, status=response.status_code, error=f"HTTP {response.status_code}")

    def deliver_due(self, *, limit: int = 50, stop: threading.Event | None = None) -> int:
        """Attempt up to ``limit`` due deliveries; returns how many were attempted."""
        attempted = 0
        while attempted < limit and not (stop is not None and stop.is_set()):
            with self._datastore.transaction(commit=True) as curs:
                curs.execute(_CLAIM)
                row = curs.fetchone()
                if row is None:
                    break
                outcome = self.post(row)
                self._record(curs, row, outcome)
            attempted += 1
        return attempted

    def _record(self, curs: psycopg.Cursor[Any], row: Mapping[str, Any], outcome: Outcome) -> None:
        subscription = int(row["subscription_id"])
        if outcome.ok:
            curs.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(),"
                " attempts = attempts + 1, last_status = %s, last_error = NULL WHERE id = %s",
                (outcome.status, row["id"]),
            )
            curs.execute(
                "UPDATE webhook_subscriptions SET status = 'active', consecutive_failures = 0,"
                " dead_since = NULL, last_attempt_at = now(), last_success_at = now()"
                " WHERE id = %s",
                (subscription,),
            )
            if row["status"] == "dead":
                log.warning(
                    "webhook %d (%s) answers again: no longer dead", subscription, row["url"]
                )
            return
        failures = int(row["consecutive_failures"]) + 1
        dead = failures >= self._dead_after
        wait = self._policy.max_wait if dead else self._policy.wait_before(failures)
        curs.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = %s,"
            " last_error = %s WHERE id = %s",
            (outcome.status, outcome.error, row["id"]),
        )
        # The whole subscription backs off: its other deliveries would fail alike.
        curs.execute(
            "UPDATE webhook_deliveries SET next_attempt_at ="
            " greatest(next_attempt_at, now() + make_interval(secs => %s))"
            " WHERE subscription_id = %s AND state = 'pending'",
            (wait, subscription),
        )
        curs.execute(
            "UPDATE webhook_subscriptions SET consecutive_failures = %s, last_error = %s,"
            " last_attempt_at = now(),"
            " status = CASE WHEN %s THEN 'dead' ELSE status END,"
            " dead_since = CASE WHEN %s THEN coalesce(dead_since, now()) ELSE dead_since END"
            " WHERE id = %s",
            (failures, outcome.error, dead, dead, subscription),
        )
        if dead and row["status"] != "dead":
            log.error(
                "webhook %d (%s) marked dead after %d failures in a row (%s); its deliveries"
                " are kept and retried every %.0f s",
                subscription,
                row["url"],
                failures,
                outcome.error,
                self._policy.max_wait,
            )
        else:
            log.warning(
                "webhook %d (%s) failed (%s); retrying in %.1f s",
                subscription,
                row["url"],
                outcome.error,
                wait,
            )


class WebhookRole:
    """The `webhooks` role of `eventcrm serve`: one active instance per database (an
    advisory lock; others stand by), feeding the outbox and delivering from it."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        conninfo: str,
        feed: AlertFeed,
        deliverer: Deliverer,
        *,
        poll_ms: int = 250,
    ) -> None:
        self._datastore = datastore
        self._conninfo = conninfo
        self._feed = feed
        self._deliverer = deliverer
        self._poll_ms = poll_ms

    def run(self, stop: threading.Event) -> bool:
        """Feed and deliver until ``stop``; returns False at once if another instance
        holds the lock."""
        with psycopg.connect(self._conninfo, autocommit=True) as leader:
            row = leader.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (LEADER_LOCK,)
            ).fetchone()
            if row is None or not row[0]:
                return False
            while not stop.is_set():
                fed = self._feed.poll_once(self._poll_ms)
                sent = self._deliverer.deliver_due(stop=stop)
                if not fed and not sent:
                    stop.wait(self._poll_ms / 1000)
        return True
