"""Re-announcing change messages a wiped broker lost (ADR 15).

Change messages (`tier-changes`, `lifecycle-changes`, `churn-alerts`) are published
once, by the projector, when a transition happens. When the broker loses its data, what
subscribers had not consumed yet is gone, and nothing in the store makes the projector
publish it again. So every topic incarnation (ADR 11) is logged when first seen, and
when a change topic's current incarnation has a predecessor, the relay — one active per
store — re-announces, before it publishes anything else on the new incarnation, what
the lost one may have carried: for every customer whose read model changed since the
lost incarnation was first seen, the latest tier change, the latest lifecycle change
and every alert transition; and for every customer with an open alert, that alert's
latest transition. Each message is a `projections.Change` of a replay of the store
(the same ``change_id`` as when it was first published) marked ``"reannounced": true``.
Subscribers deduplicate by ``change_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Final

import orjson
from eventsourcing.postgres import PostgresDatastore
from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from adapters.readmodels import READ_MODELS_TABLE
from adapters.readside import ProjectionReader
from adapters.relay import deliver
from adapters.store import CustomerStore
from adapters.topics import TopicNames
from projections import Change, Policy, replay
from projections.identity import IDENTITY_KINDS, identity_replay

log = logging.getLogger(__name__)

INCARNATIONS_TABLE: Final = "topic_incarnations"


class IncarnationLog:
    """The `topic_incarnations` table (migration v4): when each incarnation of each
    topic was first seen, and when the messages of its predecessor were re-announced."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self._datastore = datastore
        table = Identifier(datastore.schema, INCARNATIONS_TABLE)
        self._adopt = SQL(
            "INSERT INTO {} (topic, incarnation) SELECT * FROM unnest(%s::text[], %s::text[]) "
            "ON CONFLICT DO NOTHING"
        ).format(table)
        self._pending = SQL(
            "SELECT cur.topic, (SELECT max(prev.adopted_at) FROM {t} prev "
            "  WHERE prev.topic = cur.topic AND prev.incarnation <> cur.incarnation "
            "  AND prev.adopted_at <= cur.adopted_at) AS lost_since "
            "FROM {t} cur WHERE cur.announced_at IS NULL "
            "AND (cur.topic, cur.incarnation) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(t=table)
        self._announced = SQL(
            "UPDATE {} SET announced_at = now() WHERE (topic, incarnation) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(table)
        self._logged = SQL("SELECT topic, incarnation FROM {} WHERE topic = ANY(%s)").format(table)

    def adopt(self, incarnations: Mapping[str, str]) -> None:
        """Log the incarnations first seen now (idempotent); empty ones are skipped."""
        known = {topic: tag for topic, tag in incarnations.items() if tag}
        if known:
            with self._datastore.transaction(commit=True) as curs:
                curs.execute(self._adopt, (list(known), list(known.values())))

    def logged(self, topics: Iterable[str]) -> dict[str, set[str]]:
        """Every incarnation logged so far of each of ``topics``."""
        found: dict[str, set[str]] = {topic: set() for topic in topics}
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._logged, (list(found),))
            for row in curs.fetchall():
                found[row["topic"]].add(row["incarnation"])
        return found

    def pending(self, incarnations: Mapping[str, str]) -> dict[str, datetime | None]:
        """The given incarnations not yet announced, each with the instant its
        predecessor was first seen (None: it has none, so nothing was lost)."""
        known = {topic: tag for topic, tag in incarnations.items() if tag}
        if not known:
            return {}
        topics, tags = list(known), list(known.values())
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._pending, (topics, tags))
            return {row["topic"]: row["lost_since"] for row in curs.fetchall()}

    def announced(self, incarnations: Mapping[str, str]) -> None:
        topics = list(incarnations)
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(self._announced, (topics, [incarnations[t] for t in topics]))


class Reannouncer:
    """Publishes what a lost change-topic incarnation may have carried (see the module)."""

    def __init__(
        self,
        store: CustomerStore,
        policy: Policy,
        *,
        topics: TopicNames,
        incarnations: Mapping[str, str],
    ) -> None:
        """``incarnations`` maps each topic to its current incarnation tag."""
        self._log = IncarnationLog(store.datastore)
        self._reader = ProjectionReader(store, policy)
        self._datastore = store.datastore
        self._topics = topics
        self._incarnations = {t: incarnations.get(t, "") for t in topics.changes()}
        self._candidates = SQL(
            "SELECT customer_id, applied_version, evaluated_at, updated_at >= %s AS changed "
            "FROM {} WHERE updated_at >= %s OR (snapshot ->> 'alert_open')::boolean "
            "ORDER BY customer_id"
        ).format(Identifier(store.datastore.schema, READ_MODELS_TABLE))

    def run(self, producer: KafkaProducer) -> int:
        """Re-announce on every change topic whose incarnation is new and not yet
        announced; returns how many messages were sent (flushed before returning)."""
        self._log.adopt(self._incarnations)
        pending = self._log.pending(self._incarnations)
        lost = {topic: since for topic, since in pending.items() if since is not None}
        futures = []
        if lost:
            since = min(lost.values())
            log.warning(
                "re-announcing change messages on %s: their previous incarnations were lost "
                "(changes since %s)",
                sorted(lost),
                since.isoformat(),
            )
            for change in self._changes(since):
                topic = self._topics.change_topic(change.kind)
                if topic in lost:
                    value = orjson.dumps({**change.to_dict(), "reannounced": True})
                    futures.append(
                        producer.send(topic, key=change.customer_id.encode(), value=value)
                    )
            deliver(producer, futures)
        if pending:
            self._log.announced({topic: self._incarnations[topic] for topic in pending})
        return len(futures)

    def _changes(self, since: datetime) -> Iterator[Change]:
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._candidates, (since, since))
            rows = curs.fetchall()
        for row in rows:
            if row["evaluated_at"] is None:
                continue
            customer_id = row["customer_id"]
            events = self._reader.events(customer_id, through_version=row["applied_version"])
            if any(event.kind in IDENTITY_KINDS for event in events):  # docs/identity.md
                histories = self._reader.group(customer_id) | {customer_id: events}
                steps = identity_replay(
                    customer_id, histories, self._reader.policy, as_of=row["evaluated_at"]
                )
            else:
                steps = replay(customer_id, events, self._reader.policy, as_of=row["evaluated_at"])
            changes = [change for step in steps for change in step.changes]
            yield from _announced(changes, changed=row["changed"])


def _announced(changes: list[Change], *, changed: bool) -> Iterator[Change]:
    """Of a customer's replayed changes: the latest tier and lifecycle change and every
    alert transition if it changed since the loss; else (it has an open alert) that
    alert's latest transition."""
    latest = {change.kind: change for change in changes}
    if changed:
        yield from (latest[kind] for kind in ("tier", "lifecycle") if kind in latest)
        yield from (change for change in changes if change.kind == "alert")
    elif "alert" in latest:
        yield latest["alert"]
