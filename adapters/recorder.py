"""eventsourcing's PostgreSQL process recorder, extended with what one transaction must hold.

Besides the events and the tracking position, the same transaction writes the
idempotency keys, the dead letters, and each event's chain hash. Everything that
touches the events table, and every dead letter, is written after eventsourcing's
EXCLUSIVE table lock, so commit order equals notification (and dead letter id) order —
no tailing reader, the relay included, skips a row that commits late — and the previous
link of every chain is read under the lock that serialises all writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from adapters.chain import GENESIS, link
from domain.customer import customer_uuid

EVENTS_TABLE = "customer_events"
TRACKING_TABLE = "positions"
KEYS_TABLE = "interaction_keys"
DEAD_LETTERS_TABLE = "dead_letters"
DATA_KEYS_TABLE = "customer_keys"


@dataclass(frozen=True, slots=True)
class KeyRow:
    """The permanent idempotency record of one upstream interaction."""

    source: str
    event_id: str
    customer: UUID
    version: int
    digest: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input kept with its reasons and bytes, so nothing is ever lost."""

    code: str
    field: str | None
    message: str
    rejections: list[dict[str, str | None]]
    payload: bytes
    source: str | None = None
    event_id: str | None = None
    customer_id: str | None = None
    provenance: dict[str, Any] | None = None


class BrokenChainError(RuntimeError):
    """A stored event's predecessor is missing: the store is corrupt or was written around."""


def insert_events_sql(schema: str) -> Composed:
    return SQL(
        "INSERT INTO {}.{} (originator_id, originator_version, topic, state, chain_hash) "
        "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], %b::bytea[]) "
        "RETURNING notification_id"
    ).format(Identifier(schema), Identifier(EVENTS_TABLE))


def insert_keys_sql(schema: str) -> Composed:
    return SQL(
        "INSERT INTO {}.{} (source, event_id, customer_id, originator_version, digest) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::uuid[], %b::bigint[], %b::text[])"
    ).format(Identifier(schema), Identifier(KEYS_TABLE))


def chain_heads_sql(schema: str) -> Composed:
    return SQL(
        "SELECT originator_id, originator_version, chain_hash FROM {}.{} "
        "WHERE (originator_id, originator_version) IN "
        "(SELECT * FROM unnest(%b::uuid[], %b::bigint[]))"
    ).format(Identifier(schema), Identifier(EVENTS_TABLE))


ERASED_MESSAGE = "personal data erased"
"""What an erased dead letter keeps of its message; its code and field stay."""


def dead_letter_fingerprint(letter: DeadLetter) -> bytes:
    """Identifies a dead letter by what it is (code, bytes, where from): re-importing a
    file or redelivering a message adds no dead letter that is already there."""
    provenance = b"" if letter.provenance is None else dumps_sorted(letter.provenance)
    parts = (letter.code.encode(), letter.payload, provenance)
    return sha256(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).digest()


def dumps_sorted(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)


def erased_rejections(rejections: list[dict[str, str | None]]) -> list[dict[str, str | None]]:
    """Rejections without their messages (a message may quote the rejected value)."""
    return [
        {"code": r.get("code"), "field": r.get("field"), "message": ERASED_MESSAGE}
        for r in rejections
    ]


def forgotten_among(curs: Cursor[Any], schema: str, customer_ids: Sequence[str]) -> set[str]:
    """Which of these upstream customer ids were erased (their data key is shredded)."""
    wanted = {customer_uuid(c): c for c in customer_ids}
    if not wanted:
        return set()
    curs.execute(
        SQL("SELECT customer_id FROM {}.{} WHERE customer_id = ANY(%s) AND wrapped IS NULL").format(
            Identifier(schema), Identifier(DATA_KEYS_TABLE)
        ),
        (list(wanted),),
    )
    return {wanted[row["customer_id"]] for row in curs.fetchall()}


def insert_dead_letters(curs: Cursor[Any], schema: str, letters: Sequence[DeadLetter]) -> None:
    """Insert dead letters (call under the events table lock, as `forget` shreds under
    it too): one already there is skipped, and one of an erased customer is stored
    erased — its bytes and messages never reach the table (docs/privacy.md)."""
    if not letters:
        return
    forgotten = forgotten_among(
        curs, schema, sorted({d.customer_id for d in letters if d.customer_id})
    )
    rows: list[tuple[Any, ...]] = []
    for d in letters:
        fingerprint = dead_letter_fingerprint(d)
        if d.customer_id is not None and d.customer_id in forgotten:
            rows.append(
                (
                    d.code,
                    d.field,
                    ERASED_MESSAGE,
                    Jsonb(erased_rejections(d.rejections)),
                    b"",
                    d.source,
                    d.event_id,
                    d.customer_id,
                    None if d.provenance is None else Jsonb(d.provenance),
                    fingerprint,
                    True,
                )
            )
        else:
            rows.append(
                (
                    d.code,
                    d.field,
                    d.message,
                    Jsonb(d.rejections),
                    d.payload,
                    d.source,
                    d.event_id,
                    d.customer_id,
                    None if d.provenance is None else Jsonb(d.provenance),
                    fingerprint,
                    False,
                )
            )
    curs.executemany(
        SQL(
            "INSERT INTO {}.{} (code, field, message, rejections, payload, source, event_id, "
            "customer_id, provenance, fingerprint, erased_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) "
            "ON CONFLICT (fingerprint) DO NOTHING"
        ).format(Identifier(schema), Identifier(DEAD_LETTERS_TABLE)),
        rows,
    )


def chain_hashes(stored_events: Sequence[StoredEvent], previous: dict[UUID, bytes]) -> list[bytes]:
    """Hashes for events in version order per customer, continuing from `previous` heads."""
    heads = dict(previous)
    hashes = []
    for event in stored_events:
        originator_id = event.originator_id
        assert isinstance(originator_id, UUID)
        if event.originator_version == 1:
            prior = GENESIS
        else:
            try:
                prior = heads[originator_id]
            except KeyError:
                raise BrokenChainError(
                    f"no stored event {originator_id} v{event.originator_version - 1}"
                ) from None
        value = link(prior, originator_id, event.originator_version, event.topic, event.state)
        heads[originator_id] = value
        hashes.append(value)
    return hashes


def read_previous_links(
    curs: Cursor[DictRow], schema: str, stored_events: Sequence[StoredEvent]
) -> dict[UUID, bytes]:
    """The chain hash just before each customer's first new event (call under the lock)."""
    firsts: dict[UUID, int] = {}
    for event in stored_events:
        originator_id = event.originator_id
        assert isinstance(originator_id, UUID)
        if originator_id not in firsts and event.originator_version > 1:
            firsts[originator_id] = event.originator_version - 1
    if not firsts:
        return {}
    curs.execute(chain_heads_sql(schema), (list(firsts), list(firsts.values())), binary=True)
    rows = curs.fetchall()
    return {row["originator_id"]: bytes(row["chain_hash"]) for row in rows}


class CustomerRecorder(PostgresProcessRecorder):
    """Writes events, keys, positions and dead letters of one batch in one transaction."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(
            datastore, events_table_name=EVENTS_TABLE, tracking_table_name=TRACKING_TABLE
        )
        schema = self.datastore.schema
        self.insert_events_statement = insert_events_sql(schema)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        trackings: Sequence[Tracking] = kwargs.get("trackings", ())
        for tracking in trackings:
            self._insert_tracking(curs, tracking)
        dead_letters: Sequence[DeadLetter] = kwargs.get("dead_letters", ())
        if dead_letters and not stored_events:
            # Dead letters are an outbox the relay tails by id, like the notification
            # log: written under the same table lock, their ids commit in order, so
            # the relay never passes over one that commits late (RELIABILITY G4, G11).
            self._lock_table(curs)
            self._notify_channel(curs)
            insert_dead_letters(curs, self.datastore.schema, dead_letters)
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        schema = self.datastore.schema
        insert_dead_letters(curs, schema, kwargs.get("dead_letters", ()))
        keys: Sequence[KeyRow] = kwargs.get("keys", ())
        if keys:
            curs.execute(
                insert_keys_sql(schema),
                (
                    [k.source for k in keys],
                    [k.event_id for k in keys],
                    [k.customer for k in keys],
                    [k.version for k in keys],
                    [k.digest for k in keys],
                ),
                binary=True,
            )
        hashes = chain_hashes(stored_events, read_previous_links(curs, schema, stored_events))
        curs.execute(
            self.insert_events_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
                hashes,
            ),
            binary=True,
        )
