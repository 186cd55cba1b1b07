"""Erasure by crypto-shredding (`eventcrm forget`) and its receipts (`eventcrm erasures`).

Personal data is stored only encrypted with the customer's data key (ADR 0002), so
shredding the key erases it from every stored event without touching their bytes: the
hash chains still verify and the history still replays (ADR 0024). What is not under
the key is erased by hand, in the same transaction:

- dead letters: they keep the rejected bytes as they came (they could not be parsed,
  so nothing was encrypted); those naming the customer are overwritten with nothing,
  their messages too (a message may quote the rejected value); code and field stay;
- later dead letters of the customer are stored erased (`adapters.recorder`), and
  later interactions are refused (`customer_forgotten`).

The transaction holds the events table lock, the one every writer of events and dead
letters takes, so no dead letter of the customer can commit unerased around it. Read
models, the topics eventcrm publishes (`customer-events`, the change topics) and the
projections never held personal data (`adapters.readside.input_event`). The DLQ topic
did: it gets a tombstone per erasure (key = customer id), and after a broker wipe the
relay re-sends dead letters from the table, erased ones erased.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from adapters.recorder import (
    DATA_KEYS_TABLE,
    DEAD_LETTERS_TABLE,
    ERASED_MESSAGE,
    EVENTS_TABLE,
)
from adapters.store import CustomerStore
from domain.customer import InvalidErasureError, check_erasure, customer_uuid
from domain.errors import UsageError

ERASURES_TABLE: Final = "erasures"

_ERASE_DEAD_LETTERS = SQL(
    """
    UPDATE {dead} SET payload = ''::bytea, message = %s, erased_at = %s,
      rejections = (SELECT coalesce(jsonb_agg(jsonb_build_object(
          'code', r ->> 'code', 'field', r ->> 'field', 'message', %s::text)), '[]'::jsonb)
        FROM jsonb_array_elements(rejections) AS r)
    WHERE customer_id = %s AND erased_at IS NULL
    """
)


@dataclass(frozen=True)
class Receipt:
    """What one erasure destroyed, when, by whom and why. No personal data: the
    customer id is the upstream key every event of the history already names."""

    receipt_id: str
    customer_id: str
    erased_at: datetime
    by: str
    reason: str
    forgotten_version: int | None
    """The version of the customer's `Forgotten` event (None: the customer had no
    history, only dead letters or nothing)."""
    destroyed: dict[str, Any]
    already: bool = False
    """True when `forget` found the customer erased before (the receipt is that one)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "customer_id": self.customer_id,
            "erased_at": self.erased_at.isoformat(),
            "by": self.by,
            "reason": self.reason,
            "forgotten_version": self.forgotten_version,
            "destroyed": self.destroyed,
        }


@dataclass(frozen=True)
class Tombstones:
    """Publishes a tombstone (key = customer id, no value) on the keyed ``topics`` that
    carried personal data, once the erasure committed."""

    topics: list[str]
    publish: Callable[[str], None]


class Eraser:
    """Forget customers and list the receipts."""

    def __init__(self, store: CustomerStore, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        schema = store.datastore.schema
        self._tables = {
            "events": Identifier(schema, EVENTS_TABLE),
            "keys": Identifier(schema, DATA_KEYS_TABLE),
            "dead": Identifier(schema, DEAD_LETTERS_TABLE),
            "erasures": Identifier(schema, ERASURES_TABLE),
        }

    def receipt(self, customer_id: str) -> Receipt | None:
        rows = self._select(SQL("WHERE customer_id = %s"), (customer_id,))
        return rows[0] if rows else None

    def receipts(self) -> list[Receipt]:
        return self._select(SQL("ORDER BY erased_at, customer_id"), ())

    def _select(self, tail: SQL, params: tuple[Any, ...]) -> list[Receipt]:
        statement = (
            SQL(
                "SELECT receipt_id, customer_id, erased_at, erased_by, reason, forgotten_version, "
                "destroyed FROM {} "
            ).format(self._tables["erasures"])
            + tail
        )
        with self._store.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            rows = curs.fetchall()
        return [
            Receipt(
                receipt_id=str(r["receipt_id"]),
                customer_id=r["customer_id"],
                erased_at=r["erased_at"],
                by=r["erased_by"],
                reason=r["reason"],
                forgotten_version=r["forgotten_version"],
                destroyed=r["destroyed"],
            )
            for r in rows
        ]

    def forget(
        self, customer_id: str, *, by: str, reason: str, tombstones: Tombstones | None = None
    ) -> Receipt:
        """Erase the customer's personal data; idempotent: a second call changes nothing
        and returns the first receipt (``already`` set), re-publishing its tombstones."""
        now = self._clock()
        try:
            check_erasure(by=by, reason=reason, at=now)
        except InvalidErasureError as exc:
            raise UsageError(str(exc), code="invalid_option") from None
        if not customer_id.strip():
            raise UsageError("CUSTOMER_ID must not be empty", code="invalid_option")
        earlier = self.receipt(customer_id)
        if earlier is not None:
            if tombstones is not None:
                tombstones.publish(customer_id)
            return Receipt(**{**earlier.__dict__, "already": True})
        # The event first (it carries no personal data), then the shredding: if this
        # process dies in between, a rerun finds the event and finishes the job.
        version = self._store.record_forgotten(customer_id, by=by, reason=reason)
        topics = [] if tombstones is None else list(tombstones.topics)
        self._shred(customer_id, version, by=by, reason=reason, at=now, topics=topics)
        self._store.forget_cached(customer_uuid(customer_id))
        if tombstones is not None:
            tombstones.publish(customer_id)
        receipt = self.receipt(customer_id)
        assert receipt is not None
        return receipt

    def _shred(
        self,
        customer_id: str,
        version: int | None,
        *,
        by: str,
        reason: str,
        at: datetime,
        topics: list[str],
    ) -> None:
        customer = customer_uuid(customer_id)
        t = self._tables
        datastore = self._store.datastore
        with datastore.transaction(commit=True) as curs:
            # The writers' lock: no dead letter of this customer commits unerased around us.
            curs.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(t["events"]))
            curs.execute(
                SQL("SELECT wrapped IS NOT NULL AS keyed FROM {} WHERE customer_id = %s").format(
                    t["keys"]
                ),
                (customer,),
            )
            row = curs.fetchone()
            key_state = "none" if row is None else ("shredded" if row["keyed"] else "was_shredded")
            # A tombstone without a key, so no key is ever made for this customer again.
            curs.execute(
                SQL(
                    "INSERT INTO {} (customer_id, wrapped, master_key_id, forgotten_at) "
                    "VALUES (%s, NULL, %s, %s) ON CONFLICT (customer_id) DO UPDATE "
                    "SET wrapped = NULL, forgotten_at = coalesce({}.forgotten_at, %s)"
                ).format(t["keys"], t["keys"]),
                (customer, self._store.keyring.master_key_id, at, at),
            )
            curs.execute(
                _ERASE_DEAD_LETTERS.format(dead=t["dead"]),
                (ERASED_MESSAGE, at, ERASED_MESSAGE, customer_id),
            )
            dead_letters = curs.rowcount
            curs.execute(
                SQL(
                    "SELECT count(*) AS n FROM {} WHERE originator_id = %s AND "
                    "eventcrm_try_jsonb(state) ->> 'personal' IS NOT NULL"
                ).format(t["events"]),
                (customer,),
            )
            counted = curs.fetchone()
            destroyed: dict[str, Any] = {
                "data_key": key_state,
                "events_with_personal_data": 0 if counted is None else int(counted["n"]),
                "dead_letters_erased": dead_letters,
                "read_models": "hold no personal data",
                "tombstones": topics,
            }
            curs.execute(
                SQL(
                    "INSERT INTO {} (receipt_id, customer_id, customer, erased_at, erased_by,"
                    " reason, forgotten_version, destroyed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(t["erasures"]),
                (uuid.uuid4(), customer_id, customer, at, by, reason, version, Jsonb(destroyed)),
            )
