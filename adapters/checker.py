"""`eventcrm verify`: the checker is complete (RELIABILITY G14).

It compares sets, not only the rows that exist: every stored customer against the read
models (missing, extra, stale, ahead, overdue, unequal to a replay), every idempotency
key against the events, and — when a broker is configured — every dead letter against
the DLQ topic (counted by consuming it) and the consumers' positions against the
topics' ends. Each kind of finding has a count and a few examples; any finding makes
the report fail. docs/verify.md documents the kinds and the JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from eventsourcing.persistence import DataError
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier

from adapters.ingest import position_name as ingest_position
from adapters.readmodels import Audit, ReadModelStore, audit
from adapters.readside import RECORDED
from adapters.recorder import DEAD_LETTERS_TABLE, EVENTS_TABLE, KEYS_TABLE
from adapters.relay import EVENTS_POSITION, starting_position
from adapters.relay import position_name as relay_position
from adapters.store import CustomerStore
from adapters.topics import TopicNames, TopicWatch, incarnation_of, log_ends, read_topic
from projections import Policy

EXAMPLES: Final = 5
"""Examples kept per kind of finding."""

TIMER_GRACE: Final = timedelta(seconds=60)
"""How long past its next deadline a read model may be before it counts as overdue: the
projector's timer ticks every second, but waits up to 15 s while it works off a backlog."""

READ_MODEL_KINDS: Final = (
    "missing_read_model",
    "extra_read_model",
    "stale_read_model",
    "read_model_ahead",
    "differs",
    "overdue_timer",
    "evaluated_in_future",
    "damaged_event",
)
KEY_KINDS: Final = ("key_without_event", "event_without_key", "key_event_mismatch")
TOPIC_KINDS: Final = (
    "topic_missing",
    "dead_letter_not_on_topic",
    "unknown_dlq_message",
    "ingest_behind",
    "ingest_past_end",
    "relay_behind",
    "broker_unreachable",
)


@dataclass
class Finding:
    """How many of one kind, and the first few."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any], count: int = 1) -> None:
        self.count += count
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the topics are, for the checks that count them."""

    bootstrap: str
    topics: TopicNames


@dataclass
class Report:
    as_of: datetime
    audit: Audit
    checks: dict[str, Finding]
    lag: dict[str, Any]
    topics: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(finding.count == 0 for finding in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "as_of": self.as_of.isoformat(),
            "customers": self.audit.customers,
            "read_models": self.audit.read_models,
            "differences": [
                {
                    "customer_id": d.customer_id,
                    "field": d.field,
                    "live": d.live,
                    "replayed": d.replayed,
                }
                for d in self.audit.differences
            ],
            "checks": {
                kind: {"count": finding.count, "examples": finding.examples}
                for kind, finding in self.checks.items()
            },
            "lag": self.lag,
            "topics": self.topics,
        }


def verify(
    store: CustomerStore,
    read_models: ReadModelStore,
    policy: Policy,
    *,
    now: datetime,
    broker: Broker | None,
    grace: timedelta = TIMER_GRACE,
) -> Report:
    """Run every check at ``now``; the topic checks only with a ``broker``."""
    found = audit(read_models, store, policy, now=now, grace=grace)
    checks = {kind: Finding() for kind in (*READ_MODEL_KINDS, *KEY_KINDS)}
    _read_model_findings(found, checks, now)
    _key_findings(store, checks)
    lag = {
        "missing_read_models": len(found.missing),
        "stale_read_models": len(found.stale),
        "unapplied_events": found.unapplied_events,
        "first_unapplied_position": read_models.first_unapplied(),
        "overdue_timers": len(found.overdue),
        "max_overdue_seconds": max(
            ((now - deadline).total_seconds() for _, deadline in found.overdue), default=0.0
        ),
    }
    topics: dict[str, Any] = {"checked": False, "reason": "no broker configured"}
    if broker is not None:
        checks.update({kind: Finding() for kind in TOPIC_KINDS})
        try:
            topics = _topic_findings(store, read_models, broker, checks)
        except (KafkaError, OSError, TimeoutError) as exc:
            checks["broker_unreachable"].add({"bootstrap": broker.bootstrap, "error": str(exc)})
            topics = {"checked": False, "reason": f"broker unreachable: {exc}"}
    return Report(now, found, checks, lag, topics)


def _read_model_findings(found: Audit, checks: dict[str, Finding], now: datetime) -> None:
    for customer_id, stored in found.missing:
        checks["missing_read_model"].add({"customer_id": customer_id, "stored_version": stored})
    for customer_id, applied in found.extra:
        checks["extra_read_model"].add({"customer_id": customer_id, "applied_version": applied})
    for kind, rows in (("stale_read_model", found.stale), ("read_model_ahead", found.ahead)):
        for customer_id, applied, stored in rows:
            checks[kind].add(
                {"customer_id": customer_id, "applied_version": applied, "stored_version": stored}
            )
    for customer_id, deadline in found.overdue:
        checks["overdue_timer"].add(
            {
                "customer_id": customer_id,
                "next_deadline": deadline.isoformat(),
                "overdue_seconds": round((now - deadline).total_seconds(), 3),
            }
        )
    for customer_id, evaluated_at in found.future:
        checks["evaluated_in_future"].add(
            {"customer_id": customer_id, "evaluated_at": evaluated_at.isoformat()}
        )
    for customer_id, version in found.damaged:
        checks["damaged_event"].add({"customer_id": customer_id, "version": version})
    seen: set[str] = set()
    for d in found.differences:
        example = {"customer_id": d.customer_id, "field": d.field, "live": d.live}
        example["replayed"] = d.replayed
        checks["differs"].add(example, count=0 if d.customer_id in seen else 1)
        seen.add(d.customer_id)


FAST_JSON: Final = "convert_from(state, 'UTF8')::jsonb"
SAFE_JSON: Final = "eventcrm_try_jsonb(state)"
"""The same, NULL for bytes that do not decode (migration v6): the fallback."""

_KEY_FINDINGS = SQL(
    """
    SELECT kind, n, source, event_id, customer, version FROM (
      SELECT *, count(*) OVER w AS n, row_number() OVER (w ORDER BY source, event_id) AS r
      FROM (
        SELECT CASE WHEN e.originator_id IS NULL THEN 'key_without_event'
                    WHEN k.source IS NULL THEN 'event_without_key'
                    ELSE 'key_event_mismatch' END AS kind,
               coalesce(k.source, e.source) AS source,
               coalesce(k.event_id, e.event_id) AS event_id,
               coalesce(k.customer_id, e.originator_id) AS customer,
               coalesce(k.originator_version, e.originator_version) AS version
        FROM {keys} k
        FULL JOIN (
          SELECT originator_id, originator_version, s ->> 'source' AS source,
                 s ->> 'event_id' AS event_id, s ->> 'digest' AS digest
          FROM {events}, LATERAL (SELECT {as_json} AS s) AS j
          WHERE topic = %s
        ) e ON e.originator_id = k.customer_id AND e.originator_version = k.originator_version
        WHERE e.originator_id IS NULL OR k.source IS NULL OR k.source <> e.source
           OR k.event_id <> e.event_id OR k.digest <> e.digest
      ) AS found
      WINDOW w AS (PARTITION BY kind)
    ) AS numbered
    WHERE r <= %s
    """
)


def _key_findings(store: CustomerStore, checks: dict[str, Finding]) -> None:
    """Idempotency keys ↔ events, both ways: every key names a stored interaction with
    the same source, event id and digest, and every stored interaction has its key."""
    schema = store.datastore.schema
    tables = {"keys": Identifier(schema, KEYS_TABLE), "events": Identifier(schema, EVENTS_TABLE)}
    try:
        with store.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                _KEY_FINDINGS.format(**tables, as_json=SQL(FAST_JSON)), (RECORDED, EXAMPLES)
            )
            rows = curs.fetchall()
    except DataError:
        # A damaged row (reported as `damaged_event`): again, reading it as NULL.
        with store.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                _KEY_FINDINGS.format(**tables, as_json=SQL(SAFE_JSON)), (RECORDED, EXAMPLES)
            )
            rows = curs.fetchall()
    for row in rows:
        finding = checks[row["kind"]]
        finding.count = int(row["n"])
        finding.examples.append(
            {
                "source": row["source"],
                "event_id": row["event_id"],
                "customer": str(row["customer"]),
                "version": row["version"],
            }
        )


def _topic_findings(
    store: CustomerStore, read_models: ReadModelStore, broker: Broker, checks: dict[str, Finding]
) -> dict[str, Any]:
    names = broker.topics
    checked = (names.interactions, names.interactions_dlq, names.customer_events)
    watch = TopicWatch(broker.bootstrap, checked)
    try:
        ids = watch.ids()
    finally:
        watch.close()
    for name in checked:
        if ids[name] is None:
            checks["topic_missing"].add({"topic": name})
    summary: dict[str, Any] = {"checked": True, "bootstrap": broker.bootstrap}
    summary["dead_letters"] = _dead_letter_findings(store, broker, ids, checks)
    summary["ingest"] = _ingest_findings(store, broker, ids, checks)
    summary["relay"] = _relay_findings(store, read_models, names, ids, checks)
    return summary


def _dead_letter_findings(
    store: CustomerStore, broker: Broker, ids: dict[str, str | None], checks: dict[str, Finding]
) -> dict[str, Any]:
    """Dead letters ↔ the DLQ topic's current incarnation, as sets of dead letter ids
    (the relay is at least once: a repeat is counted, not a finding)."""
    statement = SQL("SELECT id FROM {}").format(
        Identifier(store.datastore.schema, DEAD_LETTERS_TABLE)
    )
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement)
        stored = {int(row["id"]) for row in curs.fetchall()}
    topic = broker.topics.interactions_dlq
    on_topic: Counter[int] = Counter()
    if ids[topic] is not None:
        for record in read_topic(broker.bootstrap, topic):
            if record.value is None:
                continue  # a tombstone `forget` published for an erased customer
            letter = _dead_letter_id(record.value)
            if letter in stored:
                on_topic[letter] += 1
            else:
                checks["unknown_dlq_message"].add(
                    {
                        "partition": record.partition,
                        "offset": record.offset,
                        "dead_letter_id": letter,
                    }
                )
    for letter in sorted(stored - set(on_topic)):
        checks["dead_letter_not_on_topic"].add({"dead_letter_id": letter})
    return {
        "topic": topic,
        "stored": len(stored),
        "on_topic": len(on_topic),
        "repeated": sum(n - 1 for n in on_topic.values()),
    }


def _dead_letter_id(value: bytes | None) -> int | None:
    try:
        letter = orjson.loads(value or b"").get("dead_letter_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return letter if isinstance(letter, int) else None


def _ingest_findings(
    store: CustomerStore, broker: Broker, ids: dict[str, str | None], checks: dict[str, Finding]
) -> dict[str, Any]:
    """The ingest's stored position of every partition of `interactions` ↔ its log end."""
    topic = broker.topics.interactions
    if ids[topic] is None:
        return {"topic": topic}
    incarnation = incarnation_of(ids[topic])
    ends = log_ends(broker.bootstrap, topic)
    consumed = 0
    for partition, end in sorted(ends.items()):
        stored = store.position(ingest_position(topic, partition, incarnation))
        applied = 0 if stored is None else stored + 1
        consumed += min(applied, end)
        example = {"partition": partition, "position": stored, "log_end": end}
        if applied < end:
            checks["ingest_behind"].add(example, count=end - applied)
        elif applied > end:
            checks["ingest_past_end"].add(example, count=applied - end)
    return {"topic": topic, "records": sum(ends.values()), "consumed": consumed}


def _relay_findings(
    store: CustomerStore,
    read_models: ReadModelStore,
    names: TopicNames,
    ids: dict[str, str | None],
    checks: dict[str, Finding],
) -> dict[str, Any]:
    """The relay's position on the current `customer-events` incarnation ↔ the store's
    last notification (before its first publication there, the position it will start
    after: ADR 11)."""
    topic = names.customer_events
    last = int(store.recorder.max_notification_id() or 0)
    if ids[topic] is None:
        return {"topic": topic, "last_notification": last}
    stored = store.position(relay_position(EVENTS_POSITION, incarnation_of(ids[topic])))
    position = (
        stored if stored is not None else starting_position(read_models.first_unapplied, store)
    )
    if position < last:
        checks["relay_behind"].add(
            {"topic": topic, "position": position, "last_notification": last}, count=last - position
        )
    return {"topic": topic, "position": position, "last_notification": last}
