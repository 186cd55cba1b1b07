"""The event store: the Customer application on eventsourcing + PostgreSQL.

`record(batch)` is the one write path for live traffic: it validates, deduplicates by
`(source, event_id)` forever, and writes a whole batch — events, idempotency keys,
dead letters and external positions — in one transaction.
"""

from __future__ import annotations

import binascii
import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    Mapper,
    StoredEvent,
    Tracking,
    Transcoder,
)
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import Environment, EnvType, get_topic, resolve_topic
from psycopg.sql import SQL, Identifier

from adapters.chain import GENESIS, link
from adapters.codec import StateTranscoder, decode_wire, dumps
from adapters.crypto import CryptoError, DataKey, MasterKey, WrongMasterKeyError
from adapters.keyring import Keyring
from adapters.recorder import (
    EVENTS_TABLE,
    KEYS_TABLE,
    CustomerRecorder,
    DeadLetter,
    KeyRow,
)
from adapters.retry import WRITE_CONFLICT
from domain.alerts import AlertAction, IdentityAction
from domain.customer import Customer, check_identity_link, customer_uuid, interaction_fields
from domain.errors import Code, InvalidInteraction, Rejection, UserFacingError
from domain.interactions import Interaction, parse_interaction

log = logging.getLogger(__name__)


def payload_digest(encode: Callable[[Any], bytes], key: DataKey, interaction: Interaction) -> str:
    """The keyed digest of an interaction's meaning, identical on both write paths.

    It is taken over the event's own sorted-key state (UTC instant, padded amount,
    plaintext personal fields), so equivalent spellings of one payload digest equally.
    """
    return key.digest(encode(interaction_fields(interaction, "")))


def encode_interaction(
    encode: Callable[[Any], bytes], key: DataKey, interaction: Interaction, timestamp: datetime
) -> tuple[str, bytes]:
    """(digest, stored state bytes) of an `InteractionRecorded` event, without eventsourcing.

    Mirrors `Customer.record` followed by `PersonalDataMapper.to_stored_event`; the
    test suite checks that both paths read back identically.
    """
    state = interaction_fields(interaction, "")
    digest = key.digest(encode(state))
    state["digest"] = digest
    state["timestamp"] = timestamp
    if state["personal"] is not None:
        state["personal"] = key.encrypt(orjson.dumps(state["personal"]))
    return digest, encode(state)


class PersonalDataMapper(Mapper[UUID]):
    """Encrypts the `personal` part of an event with its customer's key, on the way down.

    On the way up, a shredded key turns the personal part into None and sets
    `personal_erased`, so the history still replays after erasure.
    """

    def __init__(self, transcoder: Transcoder, keyring: Keyring) -> None:
        super().__init__(transcoder=transcoder)
        self.keyring = keyring

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        personal = state.get("personal")
        if personal is not None:
            key = self.keyring.require(originator_id)
            state["personal"] = key.encrypt(orjson.dumps(personal))
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=self.transcoder.encode(state),
        )

    def decode_state(self, originator_id: UUID, state_bytes: bytes) -> dict[str, Any]:
        state: dict[str, Any] = self.transcoder.decode(state_bytes)
        blob = state.get("personal")
        if blob is not None:
            key = self.keyring.get(originator_id)
            if key is None:
                state["personal"] = None
                state["personal_erased"] = True
            else:
                state["personal"] = orjson.loads(key.decrypt(blob))
        return state

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        originator_id = stored_event.originator_id
        assert isinstance(originator_id, UUID)
        state = self.decode_state(originator_id, stored_event.state)
        state["originator_id"] = originator_id
        state["originator_version"] = stored_event.originator_version
        cls = resolve_topic(stored_event.topic)
        domain_event: DomainEventProtocol[UUID] = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return domain_event


Status = Literal["recorded", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one item of a batch."""

    status: Status
    customer_id: str | None = None
    version: int | None = None
    """The customer version holding this interaction (for duplicates: the original's)."""
    rejections: tuple[Rejection, ...] = ()

    @property
    def code(self) -> str | None:
        return self.rejections[0].code if self.rejections else None


@dataclass(frozen=True, slots=True)
class Item:
    """One input: wire bytes or a decoded object, with where it came from."""

    payload: bytes | Mapping[str, Any]
    provenance: Mapping[str, Any] | None = None


@dataclass
class _Prepared:
    index: int
    raw: bytes | Mapping[str, Any]
    """The item as given; encoded only if it ends up a dead letter."""
    interaction: Interaction
    customer: UUID
    digest: str
    provenance: Mapping[str, Any] | None
    """Where the item came from: a conflict found at write time is dead-lettered with it."""


@dataclass
class _Plan:
    outcomes: list[Outcome | None]
    prepared: list[_Prepared] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class CustomerNotFoundError(LookupError):
    """No stored history for this customer id."""


DECODE_ERRORS = (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error)
"""What decoding damaged stored bytes raises (orjson's JSONDecodeError is a ValueError)."""


class DamagedEventError(UserFacingError):
    """A stored event's bytes do not decode: the store was damaged outside eventcrm."""

    code = "damaged_event"

    def __init__(self, customer_id: str, version: int) -> None:
        super().__init__(
            f"customer {customer_id} v{version} is damaged: its stored bytes do not decode",
            hint="`eventcrm history` marks it BROKEN; `eventcrm verify --history` checks the rest",
        )


class StalePositionError(RuntimeError):
    """A position at or past this one is already stored: the batch was applied before."""


class CustomerStore(Application[UUID]):
    """The use-case API of the event store."""

    name = "eventcrm"
    recorder_class: type[CustomerRecorder] = CustomerRecorder

    def __init__(
        self,
        env: EnvType,
        *,
        master_key: MasterKey,
        max_future_skew: timedelta,
        clock: Callable[[], datetime],
        cache_size: int = 100_000,
    ) -> None:
        self._master_key = master_key
        self.state_transcoder = StateTranscoder()
        self._cache_size = cache_size
        self.max_future_skew = max_future_skew
        self.clock = clock
        super().__init__(env)

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # Only what the composition root passes: the process environment must not
        # reconfigure the store behind its back (POSTGRES_ENABLE_DB_FUNCTIONS, say).
        return Environment(name, dict(env or {}))

    @property
    def datastore(self) -> PostgresDatastore:
        datastore = getattr(self.factory, "datastore", None)
        assert isinstance(datastore, PostgresDatastore)
        return datastore

    @property
    def master_key(self) -> MasterKey:
        """The key that wraps customers' data keys (and webhook signing secrets)."""
        return self._master_key

    def construct_transcoder(self) -> Transcoder:
        return self.state_transcoder

    def construct_mapper(self) -> Mapper[UUID]:
        self.keyring = Keyring(self.datastore, self._master_key, cache_size=self._cache_size)
        return PersonalDataMapper(self.construct_transcoder(), self.keyring)

    def construct_recorder(self) -> CustomerRecorder:
        return self.recorder_class(self.datastore)

    @property
    def pii_mapper(self) -> PersonalDataMapper:
        assert isinstance(self.mapper, PersonalDataMapper)
        return self.mapper

    # --- writing ---------------------------------------------------------------

    def record(
        self,
        batch: Sequence[Item | bytes | Mapping[str, Any]],
        *,
        positions: Sequence[Tracking] = (),
    ) -> list[Outcome]:
        """Record a batch in one transaction; one outcome per item, in order.

        `positions` (e.g. Kafka topic-partition offsets) are stored in the same
        transaction, so a consumer that seeks to them after a crash neither loses nor
        repeats an effect.
        """
        items = [i if isinstance(i, Item) else Item(i) for i in batch]
        plan = self._validate(items)

        def attempt() -> list[Outcome]:
            try:
                return self._write(plan, positions)
            except IntegrityError:
                self._check_positions(positions)
                self._evict({p.customer for p in plan.prepared})
                raise

        return WRITE_CONFLICT.call("record", attempt, on=IntegrityError)

    def _validate(self, items: Sequence[Item]) -> _Plan:
        now = self.clock()
        plan = _Plan(outcomes=[None] * len(items))
        valid: list[tuple[int, bytes | Mapping[str, Any], Interaction]] = []
        for index, item in enumerate(items):
            decoded: Mapping[str, Any] | None = None
            try:
                decoded = (
                    decode_wire(item.payload) if isinstance(item.payload, bytes) else item.payload
                )
                interaction = parse_interaction(
                    decoded, now=now, max_future_skew=self.max_future_skew
                )
            except InvalidInteraction as exc:
                plan.outcomes[index] = Outcome("rejected", rejections=exc.rejections)
                plan.dead_letters.append(
                    _dead_letter(exc.rejections, item.payload, item.provenance, decoded)
                )
                continue
            valid.append((index, item.payload, interaction))
        keys, forgotten = self.keyring.ensure(customer_uuid(i.customer_id) for _, _, i in valid)
        for index, raw, interaction in valid:
            customer = customer_uuid(interaction.customer_id)
            key = keys.get(customer)
            if key is None or customer in forgotten:
                rejection = Rejection(
                    Code.CUSTOMER_FORGOTTEN,
                    "customer_id",
                    "this customer's personal data was erased; new interactions are refused",
                )
                plan.outcomes[index] = Outcome(
                    "rejected", interaction.customer_id, rejections=(rejection,)
                )
                plan.dead_letters.append(
                    _dead_letter((rejection,), raw, items[index].provenance, None, interaction)
                )
                continue
            digest = payload_digest(self.state_transcoder.encode, key, interaction)
            plan.prepared.append(
                _Prepared(index, raw, interaction, customer, digest, items[index].provenance)
            )
        return plan

    def _write(self, plan: _Plan, positions: Sequence[Tracking]) -> list[Outcome]:
        outcomes = list(plan.outcomes)
        dead_letters = list(plan.dead_letters)
        existing = self._existing_keys(
            [(p.interaction.source, p.interaction.event_id) for p in plan.prepared]
        )
        seen: dict[tuple[str, str], tuple[UUID, str, int]] = {
            k: (v[0], v[1], v[2]) for k, v in existing.items()
        }
        aggregates = self._load_customers(plan.prepared)
        now = self.clock()  # the batch's recorded timestamp (ADR 26: one instant per write)
        keys: list[KeyRow] = []
        for p in plan.prepared:
            i = p.interaction
            key = (i.source, i.event_id)
            previous = seen.get(key)
            if previous is not None:
                if previous[0] == p.customer and previous[1] == p.digest:
                    outcomes[p.index] = Outcome("duplicate", i.customer_id, previous[2])
                else:
                    rejection = Rejection(
                        Code.CONFLICTING_DUPLICATE,
                        "event_id",
                        f"({i.source!r}, {i.event_id!r}) was already recorded with another payload",
                    )
                    outcomes[p.index] = Outcome(
                        "rejected", i.customer_id, previous[2], (rejection,)
                    )
                    dead_letters.append(_dead_letter((rejection,), p.raw, p.provenance, None, i))
                continue
            customer = aggregates.get(p.customer)
            if customer is None:
                customer = aggregates[p.customer] = Customer(i.customer_id, timestamp=now)
            customer.record(i, digest=p.digest, at=now)
            seen[key] = (p.customer, p.digest, customer.version)
            keys.append(KeyRow(i.source, i.event_id, p.customer, customer.version, p.digest))
            outcomes[p.index] = Outcome("recorded", i.customer_id, customer.version)
        self.save(
            *aggregates.values(), trackings=list(positions), keys=keys, dead_letters=dead_letters
        )
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    def _load_customers(self, prepared: Sequence[_Prepared]) -> dict[UUID, Customer]:
        return self._load_customers_by_id(list(dict.fromkeys(p.customer for p in prepared)))

    def _load_customers_by_id(self, wanted: Sequence[UUID]) -> dict[UUID, Customer]:
        """Existing customers among `wanted`: cached ones, then one query to tell which of
        the rest exist (new customers cost no read at all)."""
        cache = self.repository.cache
        loaded: dict[UUID, Customer] = {}
        uncached = []
        for customer in wanted:
            try:
                cached = cache.get(customer) if cache is not None else None
            except KeyError:
                cached = None
            if isinstance(cached, Customer):
                loaded[customer] = copy.deepcopy(cached)
            else:
                uncached.append(customer)
        if uncached:
            statement = SQL(
                "SELECT originator_id FROM {} "
                "WHERE originator_id = ANY(%b) AND originator_version = 1"
            ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(statement, (uncached,))
                existing = [row["originator_id"] for row in curs.fetchall()]
            for customer in existing:
                aggregate: object = self.repository.get(customer)
                assert isinstance(aggregate, Customer)
                loaded[customer] = aggregate
        return loaded

    def _evict(self, customers: set[UUID]) -> None:
        cache = self.repository.cache
        if cache is None:
            return
        for customer in customers:
            with contextlib.suppress(KeyError):
                cache.get(customer, evict=True)

    def _existing_keys(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[UUID, str, int]]:
        if not keys:
            return {}
        statement = SQL(
            "SELECT source, event_id, customer_id, digest, originator_version FROM {} "
            "WHERE (source, event_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
        ).format(Identifier(self.datastore.schema, KEYS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, ([k[0] for k in keys], [k[1] for k in keys]), binary=True)
            return {
                (r["source"], r["event_id"]): (
                    r["customer_id"],
                    r["digest"],
                    r["originator_version"],
                )
                for r in curs.fetchall()
            }

    def _check_positions(self, positions: Sequence[Tracking]) -> None:
        recorder = self.recorder
        assert isinstance(recorder, CustomerRecorder)
        for position in positions:
            stored = recorder.max_tracking_id(position.application_name)
            if stored is not None and stored >= position.notification_id:
                raise StalePositionError(
                    f"{position.application_name} is already at {stored} "
                    f"(>= {position.notification_id})"
                )

    def position(self, name: str) -> int | None:
        """The stored position of an external source (e.g. a topic-partition), if any."""
        recorder = self.recorder
        assert isinstance(recorder, CustomerRecorder)
        position: int | None = recorder.max_tracking_id(name)
        return position

    def record_alert_action(
        self,
        customer_id: str,
        *,
        action: AlertAction,
        alert_id: str,
        by: str,
        reason: str,
        until: datetime | None = None,
    ) -> int:
        """Append an ops action on a churn alert; returns the customer's new version."""
        customer = customer_uuid(customer_id)

        def attempt() -> int:
            aggregate = self._load_customers_by_id([customer]).get(customer)
            if aggregate is None:
                raise CustomerNotFoundError(customer_id)
            aggregate.act_on_alert(
                action=action,
                alert_id=alert_id,
                by=by,
                reason=reason,
                until=until,
                at=self.clock(),
            )
            try:
                self.save(aggregate)
            except IntegrityError:
                self._evict({customer})
                raise
            return int(aggregate.version)

        return WRITE_CONFLICT.call("record_alert_action", attempt, on=IntegrityError)

    def record_forgotten(self, customer_id: str, *, by: str, reason: str) -> int | None:
        """Append the customer's `Forgotten` event, once: returns its version (the
        earlier one if it was recorded before), or None if the customer has no history."""
        customer = customer_uuid(customer_id)
        forgotten = get_topic(Customer.Forgotten)

        def attempt() -> int | None:
            statement = SQL(
                "SELECT originator_version FROM {} WHERE originator_id = %s AND topic = %s "
                "ORDER BY originator_version LIMIT 1"
            ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(statement, (customer, forgotten))
                row = curs.fetchone()
            if row is not None:
                return int(row["originator_version"])
            aggregate = self._load_customers_by_id([customer]).get(customer)
            if aggregate is None:
                return None
            aggregate.forget(by=by, reason=reason, at=self.clock())
            try:
                self.save(aggregate)
            except IntegrityError:
                self._evict({customer})
                raise
            return int(aggregate.version)

        return WRITE_CONFLICT.call("record_forgotten", attempt, on=IntegrityError)

    def forget_cached(self, customer: UUID) -> None:
        """Drop a customer from the in-process caches (aggregate, data key)."""
        self._evict({customer})
        self.keyring.drop(customer)

    def record_identity_link(
        self, action: IdentityAction, survivor: str, merged: str, *, by: str, reason: str
    ) -> tuple[int, int]:
        """Record a merge or unmerge on both customers' histories in one transaction
        (optimistic concurrency on both: a concurrent link or event retries the check);
        returns both new versions. Raises `InvalidIdentityLinkError` with its code."""
        ids = (customer_uuid(survivor), customer_uuid(merged))

        def attempt() -> tuple[int, int]:
            loaded = self._load_customers_by_id(list(dict.fromkeys(ids)))
            first, second = loaded.get(ids[0]), loaded.get(ids[1])
            check_identity_link(
                action, first, second, survivor_id=survivor, merged_id=merged, by=by,
                reason=reason,
            )  # fmt: skip
            assert first is not None
            assert second is not None
            at = self.clock()
            for aggregate in (first, second):
                aggregate.link_identity(
                    action=action, survivor=survivor, merged=merged, by=by, reason=reason, at=at
                )
            try:
                self.save(first, second)
            except IntegrityError:
                self._evict(set(ids))
                raise
            return int(first.version), int(second.version)

        return WRITE_CONFLICT.call("record_identity_link", attempt, on=IntegrityError)

    def identity_links(self) -> list[tuple[int, dict[str, Any]]]:
        """(notification id, state) of every recorded merge and unmerge, in store order,
        once each (from the survivor's side): what identity resolution reads."""
        statement = SQL(
            "SELECT notification_id, originator_id, state FROM {} WHERE topic = %s "
            "ORDER BY notification_id"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (get_topic(Customer.IdentityLinkRecorded),))
            rows = curs.fetchall()
        decode = self.state_transcoder.decode
        links = []
        for row in rows:
            state = decode(bytes(row["state"]))
            if row["originator_id"] == customer_uuid(state["survivor"]):
                links.append((row["notification_id"], state))
        return links

    # --- reading ---------------------------------------------------------------

    def stored_events(self, customer_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(version, topic, state) of a customer's events, personal part left encrypted:
        what the projections need, without a key lookup per event."""
        statement = SQL(
            "SELECT originator_version, topic, state FROM {} "
            "WHERE originator_id = %s ORDER BY originator_version"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (customer_uuid(customer_id),), binary=True)
            rows = curs.fetchall()
        decode = self.state_transcoder.decode
        events = []
        for r in rows:
            try:
                state = decode(bytes(r["state"]))
            except DECODE_ERRORS:
                raise DamagedEventError(customer_id, r["originator_version"]) from None
            events.append((r["originator_version"], r["topic"], state))
        return events

    def scan_stored_events(
        self,
        *,
        batch_rows: int = 20_000,
        on_damaged: Callable[[UUID, int], None] | None = None,
    ) -> Iterator[tuple[UUID, int, str, dict[str, Any]]]:
        """Every stored event, customer by customer in version order (server-side cursor).
        An event whose bytes do not decode raises `DamagedEventError`, or, with
        ``on_damaged``, is reported to it and skipped."""
        decode = self.state_transcoder.decode
        for customer, version, topic, state, _ in self._scan_events(batch_rows):
            try:
                decoded = decode(state)
            except DECODE_ERRORS:
                if on_damaged is None:
                    raise DamagedEventError(str(customer), version) from None
                on_damaged(customer, version)
                continue
            yield customer, version, topic, decoded

    def heads(self, customer_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Each named customer's latest ``(version, notification id)``."""
        by_uuid = {customer_uuid(c): c for c in customer_ids}
        statement = SQL(
            "SELECT originator_id, max(originator_version) AS v, max(notification_id) AS p "
            "FROM {} WHERE originator_id = ANY(%s) GROUP BY 1"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(by_uuid),))
            return {by_uuid[r["originator_id"]]: (r["v"], r["p"]) for r in curs.fetchall()}

    def last_positions(self) -> dict[UUID, int]:
        """Each customer's latest notification id (what a read model has applied)."""
        statement = SQL(
            "SELECT originator_id, max(notification_id) AS position FROM {} GROUP BY 1"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement)
            return {row["originator_id"]: row["position"] for row in curs.fetchall()}

    def customer_count(self) -> int:
        statement = SQL("SELECT count(*) AS n FROM {} WHERE originator_version = 1").format(
            Identifier(self.datastore.schema, EVENTS_TABLE)
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement)
            row = curs.fetchone()
        return 0 if row is None else int(row["n"])

    def history(self, customer_id: str) -> list[HistoryEntry]:
        """The customer's stored events, decrypted where the key still exists, in order."""
        customer = customer_uuid(customer_id)
        self.keyring.check_master()
        statement = SQL(
            "SELECT originator_version, topic, state, chain_hash, notification_id FROM {} "
            "WHERE originator_id = %s ORDER BY originator_version"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (customer,))
            rows = curs.fetchall()
        entries = []
        previous = GENESIS
        for row in rows:
            state_bytes = bytes(row["state"])
            stored_hash = bytes(row["chain_hash"])
            expected = link(
                previous, customer, row["originator_version"], row["topic"], state_bytes
            )
            broken = False
            try:
                state = self.pii_mapper.decode_state(customer, state_bytes)
            except WrongMasterKeyError:
                raise
            except CryptoError:
                state = self.state_transcoder.decode(state_bytes)
                state["personal"] = None
                state["personal_unreadable"] = True
            except DECODE_ERRORS as exc:
                # Damaged bytes: marked BROKEN, and the rest of the history still shows.
                state = {"broken": f"stored bytes do not decode: {type(exc).__name__}"}
                broken = True
            entries.append(
                HistoryEntry(
                    customer_id=customer_id,
                    version=row["originator_version"],
                    position=row["notification_id"],
                    topic=row["topic"],
                    state=state,
                    chain_hash=stored_hash.hex(),
                    previous_hash=previous.hex(),
                    chain_ok=expected == stored_hash,
                    broken=broken,
                )
            )
            previous = stored_hash
        return entries

    def verify_chains(self, *, batch_rows: int = 10_000) -> ChainReport:
        """Recompute every customer's chain from the stored bytes; report the first break."""
        report = ChainReport()
        current: UUID | None = None
        previous, expected, broken = GENESIS, 1, False
        name = ""
        for customer, version, topic, state, stored in self._scan_events(batch_rows):
            if customer != current:
                current, previous, expected, broken = customer, GENESIS, 1, False
                report.customers += 1
                name = (_customer_id_in(state) if version == 1 else "") or str(customer)
            report.events += 1
            if broken:
                continue
            if version != expected:
                reason = f"version gap: expected v{expected}"
            elif link(previous, customer, version, topic, state) != stored:
                reason = "chain hash does not match the stored bytes"
            else:
                previous, expected = stored, version + 1
                continue
            report.breaks.append(ChainBreak(customer, version, reason, name))
            broken = True
        return report

    def _scan_events(self, batch_rows: int) -> Iterator[tuple[UUID, int, str, bytes, bytes]]:
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state, chain_hash FROM {} "
            "ORDER BY originator_id, originator_version"
        ).format(Identifier(self.datastore.schema, EVENTS_TABLE))
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(name="eventcrm_verify_scan") as curs,
        ):
            # One consistent snapshot, read while the caller works between batches
            # (a backtest replays every customer): a read-only scan may sit idle in its
            # transaction for longer than the pool's writer timeout allows.
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            curs.itersize = batch_rows
            curs.execute(statement)
            for row in curs:
                yield (
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                    bytes(row["chain_hash"]),
                )


@dataclass
class HistoryEntry:
    """One stored event as an auditor sees it."""

    customer_id: str
    version: int
    position: int
    topic: str
    state: dict[str, Any]
    chain_hash: str
    previous_hash: str
    chain_ok: bool
    broken: bool = False
    """The stored bytes do not decode (damaged): shown as BROKEN, never a crash."""


@dataclass
class ChainBreak:
    customer: UUID
    version: int
    reason: str
    customer_id: str = ""
    """The upstream customer id (from the first event; the aggregate id if unreadable)."""


def _customer_id_in(state: bytes) -> str:
    """The customer id a `Created` event's stored bytes carry ("" if they do not)."""
    try:
        value = orjson.loads(state).get("customer_id")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


@dataclass
class ChainReport:
    """Result of `verify --history`: counts and the first broken link of each customer."""

    customers: int = 0
    events: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


def _dead_letter(
    rejections: Sequence[Rejection],
    raw: bytes | Mapping[str, Any],
    provenance: Mapping[str, Any] | None,
    decoded: Mapping[str, Any] | None,
    interaction: Interaction | None = None,
) -> DeadLetter:
    first = rejections[0]

    def text(name: str) -> str | None:
        if interaction is not None:
            return str(getattr(interaction, name))
        value = None if decoded is None else decoded.get(name)
        return _storable(value[:256]) if isinstance(value, str) else None

    return DeadLetter(
        code=first.code,
        field=_storable(first.field),
        message=_storable(first.message),
        rejections=[_storable(r.as_dict()) for r in rejections],
        payload=raw if isinstance(raw, bytes) else dumps(raw),
        source=text("source"),
        event_id=text("event_id"),
        # The Kafka key is the customer id by contract (docs/contract.md): a message too
        # broken to read still names its customer by it, so erasure finds it.
        customer_id=_storable(text("customer_id") or _key_of(provenance)),
        provenance=None if provenance is None else _storable(dict(provenance)),
    )


def _key_of(provenance: Mapping[str, Any] | None) -> str | None:
    key = None if provenance is None else provenance.get("key")
    return key[:256] if isinstance(key, str) and key else None


_T = TypeVar("_T")


def _storable(value: _T) -> _T:
    """PostgreSQL text and jsonb cannot hold NUL: a dead letter's descriptive fields (a
    rejected field's value, an upstream key) show it as U+FFFD. The payload, kept as
    bytes, is exact. Without this a NUL in a bad record would fail its whole batch,
    again at every retry, and wedge its partition."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_storable(v) for v in value]  # type: ignore[return-value]
    return value
