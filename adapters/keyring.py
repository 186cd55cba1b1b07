"""Customers' data keys in PostgreSQL, wrapped by the master key, cached in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from adapters.crypto import CryptoError, DataKey, MasterKey, WrongMasterKeyError, generate_key
from adapters.recorder import DATA_KEYS_TABLE
from domain.errors import EventcrmError


class CustomerForgottenError(EventcrmError):
    """The customer's data key was shredded: their personal data can no longer be read."""


class Keyring:
    """Get-or-create of per-customer data keys, batched: one round trip per batch."""

    def __init__(self, datastore: PostgresDatastore, master: MasterKey, *, cache_size: int) -> None:
        self._datastore = datastore
        self._master = master
        self._cache: OrderedDict[UUID, DataKey] = OrderedDict()
        self._cache_size = cache_size
        self._checked = False
        """Whether the master key was checked against the store's (once per keyring)."""
        table = Identifier(datastore.schema, DATA_KEYS_TABLE)
        self._select = SQL(
            "SELECT customer_id, wrapped, master_key_id FROM {} WHERE customer_id = ANY(%b)"
        ).format(table)
        self._insert = SQL(
            "INSERT INTO {} (customer_id, wrapped, master_key_id) "
            "SELECT * FROM unnest(%b::uuid[], %b::bytea[], %b::text[]) "
            "ON CONFLICT (customer_id) DO NOTHING"
        ).format(table)
        self._forget = SQL(
            "UPDATE {} SET wrapped = NULL, forgotten_at = now() WHERE customer_id = %s"
        ).format(table)

    def _remember(self, key: DataKey) -> None:
        self._cache[key.customer] = key
        self._cache.move_to_end(key.customer)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _load(self, customers: list[UUID]) -> tuple[dict[UUID, DataKey], set[UUID]]:
        """Keys found and customers found forgotten (a tombstone without a key)."""
        if not self._checked:
            self.check_master()
        found: dict[UUID, DataKey] = {}
        forgotten: set[UUID] = set()
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select, (customers,), binary=True)
            for row in curs.fetchall():
                customer = row["customer_id"]
                if row["wrapped"] is None:
                    forgotten.add(customer)
                    continue
                key = DataKey(customer, self._unwrap(customer, row))
                found[customer] = key
                self._remember(key)
        return found, forgotten

    def _unwrap(self, customer: UUID, row: dict[str, Any]) -> bytes:
        try:
            return self._master.unwrap(customer, bytes(row["wrapped"]))
        except CryptoError:
            if row["master_key_id"] == self._master.key_id:
                raise  # the right key, so the bytes were altered: not a configuration slip
            raise WrongMasterKeyError(
                f"customer data keys in this store were wrapped by master key "
                f"{row['master_key_id']}, EVENTCRM_MASTER_KEY is key {self._master.key_id}",
                hint="set EVENTCRM_MASTER_KEY to the key this store was written with",
            ) from None

    def get(self, customer: UUID) -> DataKey | None:
        """The customer's key, or None if they have none (never keyed, or forgotten)."""
        key = self._cache.get(customer)
        if key is not None:
            return key
        found, _ = self._load([customer])
        return found.get(customer)

    def require(self, customer: UUID) -> DataKey:
        key = self.get(customer)
        if key is None:
            raise CustomerForgottenError(str(customer))
        return key

    def ensure(self, customers: Iterable[UUID]) -> tuple[dict[UUID, DataKey], set[UUID]]:
        """Keys for all `customers`, creating missing ones; also returns the forgotten ones."""
        wanted = list(dict.fromkeys(customers))
        keys = {c: k for c in wanted if (k := self._cache.get(c)) is not None}
        missing = [c for c in wanted if c not in keys]
        forgotten: set[UUID] = set()
        if missing:
            found, forgotten = self._load(missing)
            keys.update(found)
            create = [c for c in missing if c not in found and c not in forgotten]
            if create:
                raw = {c: generate_key() for c in create}
                with self._datastore.transaction(commit=True) as curs:
                    curs.execute(
                        self._insert,
                        (
                            create,
                            [self._master.wrap(c, raw[c]) for c in create],
                            [self._master.key_id] * len(create),
                        ),
                        binary=True,
                    )
                # A concurrent writer may have won the insert: read back the winners.
                found, lost = self._load(create)
                keys.update(found)
                forgotten |= lost
        return keys, forgotten

    @property
    def master_key_id(self) -> str:
        return self._master.key_id

    def drop(self, customer: UUID) -> None:
        """Forget a cached key (after another connection shredded it)."""
        self._cache.pop(customer, None)

    def check_master(self) -> None:
        """Refuse a master key other than the one this store's data keys were wrapped
        with, before anything is decrypted: the key id is a check value of the key
        (docs/privacy.md). Reads the two ends of an index, not the table."""
        table = Identifier(self._datastore.schema, DATA_KEYS_TABLE)
        statement = SQL(
            "(SELECT master_key_id FROM {t} ORDER BY master_key_id LIMIT 1) UNION "
            "(SELECT master_key_id FROM {t} ORDER BY master_key_id DESC LIMIT 1)"
        ).format(t=table)
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement)
            ids = sorted(row["master_key_id"] for row in curs.fetchall())
        others = [i for i in ids if i != self._master.key_id]
        if not others:
            self._checked = True
            return
        raise WrongMasterKeyError(
            f"customer data keys in this store were wrapped by master key "
            f"{others[0]}, EVENTCRM_MASTER_KEY is key {self._master.key_id}",
            hint="set EVENTCRM_MASTER_KEY to the key this store was written with",
        )

    def forget(self, customer: UUID) -> None:
        """Shred the key, leaving a tombstone so no new key is ever made for this customer."""
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(self._forget, (customer,))
        self._cache.pop(customer, None)
