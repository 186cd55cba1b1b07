"""Read models in PostgreSQL: the projector's output, and its state loader.

Read models are disposable projections of the store (invariant 1): `eventcrm rebuild`
may delete and recompute them, so the application role may UPDATE and DELETE them,
unlike events. What makes them trustworthy is the write rule in `ReadModelStore.upsert`:
a row only ever moves forward, so redeliveries and zombie workers cannot regress it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg.sql import SQL, Composed, Identifier

from adapters.readside import History, ProjectionReader
from adapters.recorder import EVENTS_TABLE
from adapters.store import CustomerNotFoundError, CustomerStore
from domain.customer import customer_uuid
from projections import (
    CustomerState,
    InputEvent,
    Policy,
    Reason,
    Snapshot,
    fold,
    initial_state,
    next_deadline,
    snapshot,
)
from projections.identity import as_member, group_state, linked, links, own, union, view
from projections.model import json_safe
from projections.ports import (
    Group,
    GroupLoader,
    Projected,
    ReadModelRow,
    ReadModelSink,
    StateLoader,
)
from projections.vocabulary import OPEN_ALERT_STATES

log = logging.getLogger(__name__)

READ_MODELS_TABLE: Final = "read_models"
_NEVER: Final = datetime.min.replace(tzinfo=UTC)

_COLUMNS: Final = (
    "customer_id",
    "originator_id",
    "applied_version",
    "applied_position",
    "next_deadline",
    "evaluated_at",
    "tier",
    "lifecycle_stage",
    "churn_score",
    "churn_level",
    "alert_state",
    "alert_id",
    "snapshot",
)
_UNNEST_ARGS: Final = SQL(
    # Binary parameters (%b): psycopg's text array dumper quotes every element with a
    # regular expression, which was a sixth of the projector's CPU.
    "%b::text[], %b::uuid[], %b::bigint[], %b::bigint[], %b::timestamptz[], "
    "%b::timestamptz[], %b::text[], %b::text[], %b::numeric[], %b::text[], %b::text[], "
    "%b::text[], %b::text[]"  # the snapshot as JSON text, cast to jsonb in the statement
)
"""One array parameter per column of `_COLUMNS`, in order."""

_FORWARD: Final = SQL(
    # Forward only. A higher version includes more events: it wins. At the same version
    # a higher position includes more of a merged partner's events (docs/identity.md;
    # for anyone else the position is that version's own). Then the state is a
    # function of the evaluation time alone (live equals replay), so a later evaluation
    # (a timer's advance) wins, and an equal one is the same row again (a redelivery):
    # nothing to write.
    "rm.applied_version < EXCLUDED.applied_version "
    "OR (rm.applied_version = EXCLUDED.applied_version "
    "AND (rm.applied_position < EXCLUDED.applied_position "
    "OR (rm.applied_position = EXCLUDED.applied_position "
    "AND coalesce(rm.evaluated_at, '-infinity') < coalesce(EXCLUDED.evaluated_at, '-infinity'))))"
)
"""The write rule: does the row ``EXCLUDED`` move the stored row ``rm`` forward?"""

_SHADOW: Final = "read_models_rebuild"
"""The temporary table a rebuild fills before it swaps (`ReadModelStore.replace`)."""


@dataclass(frozen=True, slots=True)
class ReadModel:
    """One stored read model: the snapshot as of ``evaluated_at``, including the
    customer's stored events through ``applied_version``.

    Tier, stage and alert hold until ``next_deadline`` unless a new event arrives;
    the churn score is the one at ``evaluated_at`` (it drifts continuously).
    """

    customer_id: str
    applied_version: int
    applied_position: int
    next_deadline: datetime | None
    evaluated_at: datetime | None
    tier: str
    lifecycle_stage: str
    churn_score: Decimal
    churn_level: str
    alert_state: str
    alert_id: str | None
    snapshot: dict[str, Any]
    updated_at: datetime


class ReadModelStore(ReadModelSink):
    """The `read_models` table (migration v2), on the store's connection pool: the
    projector's `ReadModelSink`."""

    def __init__(self, store: CustomerStore, *, page_size: int = 1000) -> None:
        self._datastore = store.datastore
        self._page_size = page_size
        table = Identifier(self._datastore.schema, READ_MODELS_TABLE)
        names = SQL(", ").join(Identifier(c) for c in _COLUMNS)
        updates = SQL(", ").join(
            SQL("{0} = EXCLUDED.{0}").format(Identifier(c)) for c in _COLUMNS[1:]
        )
        self._upsert = SQL(
            "INSERT INTO {table} AS rm ({names}, updated_at) "
            "SELECT {selected}, now() FROM unnest({arrays}) AS u({names}) "
            "ON CONFLICT (customer_id) DO UPDATE SET {updates}, updated_at = now() "
            "WHERE {forward}"
        ).format(
            table=table,
            names=names,
            selected=_selected(),
            arrays=_UNNEST_ARGS,
            updates=updates,
            forward=_FORWARD,
        )
        shadow = Identifier(_SHADOW)
        self._create_shadow = SQL(
            "CREATE TEMP TABLE {shadow} "
            "(LIKE {table} INCLUDING DEFAULTS, PRIMARY KEY (customer_id))"
        ).format(shadow=shadow, table=table)
        self._drop_shadow = SQL("DROP TABLE IF EXISTS pg_temp.{}").format(shadow)
        self._fill_shadow = SQL(
            "INSERT INTO pg_temp.{shadow} ({names}, updated_at) "
            "SELECT {selected}, now() FROM unnest({arrays}) AS u({names})"
        ).format(shadow=shadow, names=names, selected=_selected(), arrays=_UNNEST_ARGS)
        self._lock = SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
        self._written_since = SQL(
            "INSERT INTO pg_temp.{shadow} AS rm ({names}, updated_at) "
            "SELECT {names}, updated_at FROM {table} WHERE updated_at >= %s "
            "ON CONFLICT (customer_id) DO UPDATE SET {updates}, updated_at = EXCLUDED.updated_at "
            "WHERE {forward}"
        ).format(shadow=shadow, names=names, table=table, updates=updates, forward=_FORWARD)
        self._clear = SQL("DELETE FROM {}").format(table)
        self._swap_in = SQL(
            "INSERT INTO {table} ({names}, updated_at) SELECT {names}, updated_at "
            "FROM pg_temp.{shadow}"
        ).format(table=table, names=names, shadow=shadow)
        self._get = SQL("SELECT * FROM {} WHERE customer_id = %s").format(table)
        self._page = SQL(
            "SELECT * FROM {} WHERE customer_id > %s ORDER BY customer_id LIMIT %s"
        ).format(table)
        self._stamps = SQL("SELECT {} FROM {}").format(
            SQL(", ").join(Identifier(f.name) for f in fields(Stamp)), table
        )
        self._first_unapplied = SQL(
            "SELECT min(e.notification_id) AS p FROM {events} e "
            "LEFT JOIN {table} rm ON rm.originator_id = e.originator_id "
            "WHERE e.originator_version > coalesce(rm.applied_version, 0)"
        ).format(events=Identifier(self._datastore.schema, EVENTS_TABLE), table=table)
        self._by_alert = SQL("SELECT customer_id FROM {} WHERE alert_id = %s LIMIT 1").format(table)
        self._due = SQL(
            "SELECT customer_id, applied_version, applied_position FROM {} "
            "WHERE next_deadline <= %s ORDER BY next_deadline, customer_id"
        ).format(table)
        self._projected = SQL(
            "SELECT customer_id, applied_version, applied_position, evaluated_at FROM {} "
            "WHERE customer_id = ANY(%s)"
        ).format(table)

    def upsert(self, rows: Sequence[ReadModelRow]) -> int:
        """Write a batch in one statement; returns how many rows changed.

        Rows are sorted by customer id so two concurrent writers (a worker and its
        zombie) lock rows in the same order and cannot deadlock; if a batch names a
        customer twice, only its newest row is kept (one statement may not update a
        row twice).
        """
        newest: dict[str, ReadModelRow] = {}
        for row in rows:
            known = newest.get(row.customer_id)
            if known is None or _rank(row) > _rank(known):
                newest[row.customer_id] = row
        if not newest:
            return 0
        ordered = [newest[key] for key in sorted(newest)]
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(self._upsert, _arrays(ordered))
            written = max(curs.rowcount, 0)
        if written < len(ordered):
            # The write rule kept a newer evaluation: a redelivered batch, or a worker
            # that lost its partitions (a zombie) writing late. Harmless; logged so the
            # fault suite can see the fence hold (docs/faults.md).
            log.warning(
                "read models: %d of %d writes refused (a newer evaluation is stored)",
                len(ordered) - written,
                len(ordered),
            )
        return written

    def replace(
        self,
        rows: Iterable[ReadModelRow],
        *,
        batch: int = 1000,
        on_progress: Callable[[int], None] = lambda done: None,
    ) -> int:
        """Replace every read model with ``rows`` (one per customer), atomically for
        readers; returns how many read models there are afterwards.

        The rows go into a shadow table (a temporary one of this session) first, while
        readers and the projector keep using the live table. The swap is one
        transaction: it locks the live table against writers (EXCLUSIVE: readers go
        on), takes into the shadow every live row written since the rebuild began that
        is further along by the write rule of `upsert` (the projector's work meanwhile),
        and replaces the live rows with the shadow's. A reader sees all old rows or all
        new ones; a projector write waiting on the lock lands after the swap, in the
        new rows, by the same rule. docs/adr/0014 has the reasons.
        """
        with self._datastore.get_connection() as conn:
            started = conn.execute("SELECT now() AS t").fetchone()
            assert started is not None
            conn.execute(self._drop_shadow)
            conn.execute(self._create_shadow)
            try:
                done = 0
                for chunk in _chunks(rows, batch):
                    conn.execute(self._fill_shadow, _arrays(chunk))
                    done += len(chunk)
                    on_progress(done)
                with conn.transaction():
                    conn.execute(self._lock)
                    conn.execute(self._written_since, (started["t"],))
                    conn.execute(self._clear)
                    swapped = conn.execute(self._swap_in).rowcount
            finally:
                conn.execute(self._drop_shadow)
        return max(swapped, 0)

    def get(self, customer_id: str) -> ReadModel | None:
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._get, (customer_id,))
            row = curs.fetchone()
        return None if row is None else _read_model(row)

    def all(self) -> Iterator[ReadModel]:
        """Every read model in customer-id order, a page at a time (keyset paging: no
        long transaction, and concurrent writes never make it skip a customer)."""
        after = ""
        while True:
            with self._datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self._page, (after, self._page_size))
                rows = curs.fetchall()
            for row in rows:
                yield _read_model(row)
            if len(rows) < self._page_size:
                return
            after = rows[-1]["customer_id"]

    def customer_of_alert(self, alert_id: str) -> str | None:
        """The customer whose read model holds ``alert_id`` (index of migration v7)."""
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._by_alert, (alert_id,))
            row = curs.fetchone()
        return None if row is None else str(row["customer_id"])

    def alerts(
        self,
        *,
        state: str = "open",
        level: str | None = None,
        tier: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ReadModel]:
        """Read models with an alert in ``state`` (``open``: any open state), most at
        risk first; optionally of one churn level or tier, updated at or after ``since``."""
        conditions: list[SQL | Composed] = [
            SQL("alert_state = ANY(%s)") if state == "open" else SQL("alert_state = %s"),
        ]
        params: list[Any] = [sorted(OPEN_ALERT_STATES) if state == "open" else state]
        for column, value in (("churn_level", level), ("tier", tier)):
            if value is not None:
                conditions.append(SQL("{} = %s").format(Identifier(column)))
                params.append(value)
        if since is not None:
            conditions.append(SQL("updated_at >= %s"))
            params.append(since)
        statement = SQL(
            "SELECT * FROM {} WHERE {} ORDER BY churn_score DESC, customer_id LIMIT %s OFFSET %s"
        ).format(Identifier(READ_MODELS_TABLE), SQL(" AND ").join(conditions))
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (*params, limit, offset))
            return [_read_model(row) for row in curs.fetchall()]

    def stamps(self) -> dict[str, Stamp]:
        """Every read model without its snapshot, by customer id (one query; what
        `audit` matches with the store's customers)."""
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._stamps)
            return {row["customer_id"]: Stamp(**row) for row in curs.fetchall()}

    def first_unapplied(self) -> int | None:
        """The lowest notification id of a stored event no read model has applied yet
        (None: every event is applied).

        After the broker lost its data, re-publishing `customer-events` from here on
        redelivers every event a projector still needs; everything later that was
        applied already is a duplicate the projector ignores. One hash join of the
        events with the read models (a full scan of both: it runs once per broker
        reset, not per event). Rows without an ``originator_id`` (written before
        schema v3) count as having applied nothing.
        """
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._first_unapplied)
            row = curs.fetchone()
        return None if row is None or row["p"] is None else int(row["p"])

    def due(self, until: datetime) -> list[tuple[str, int, int]]:
        """``(customer_id, applied_version, applied_position)`` of the read models whose
        next deadline is at or before ``until``: what `Projector.resume` takes after a
        restart, since the table is also the durable list of armed timers."""
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._due, (until,))
            rows = curs.fetchall()
        return [(r["customer_id"], r["applied_version"], r["applied_position"]) for r in rows]

    def projected(self, customer_ids: Sequence[str]) -> dict[str, Projected]:
        """How far the read models of these customers are projected (one query): where
        the projector resumes a customer it reloads (`StateLoader.projected`)."""
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._projected, (list(customer_ids),))
            rows = curs.fetchall()
        return {
            r["customer_id"]: Projected(
                r["applied_version"], r["applied_position"], r["evaluated_at"]
            )
            for r in rows
        }


class StoreStateLoader(StateLoader, GroupLoader):
    """Rebuilds a customer's state from its stored events: the projector's
    `StateLoader`, used when its in-memory state is stale or missing, and its
    `GroupLoader`, which resolves identity links (docs/identity.md)."""

    def __init__(self, store: CustomerStore, policy: Policy) -> None:
        self._reader = ProjectionReader(store, policy)
        self._store = store
        self._read_models = ReadModelStore(store)

    def projected(self, customer_ids: Sequence[str]) -> dict[str, Projected]:
        return self._read_models.projected(customer_ids)

    def load_group(
        self, customer_id: str, *, as_of: datetime | None, through_version: int | None
    ) -> Group:
        policy = self._reader.policy
        try:
            histories = self._reader.group(customer_id)
        except CustomerNotFoundError:
            return Group(customer_id, (), initial_state(customer_id, policy), {})
        current = [link for link in links(histories[customer_id]) if link.end is None]
        if not current:
            history = [
                e
                for e in histories[customer_id]
                if through_version is None or e.version <= through_version
            ]
            events = own(history)
            state = (
                fold(customer_id, events, policy, as_of=state_instant(history))
                if events
                else initial_state(customer_id, policy)
            )
            heads = {} if through_version is not None else self._store.heads([customer_id])
            return Group(customer_id, (), state, heads)
        survivor = current[0].survivor
        if survivor != customer_id:
            histories = self._reader.group(survivor)
        members = tuple(
            sorted(
                link.merged
                for link in links(histories[survivor])
                if link.end is None and link.survivor == survivor
            )
        )
        everything = [e for c in (survivor, *members) for e in histories[c]]
        latest = state_instant(everything)
        state = fold(
            survivor,
            union(histories[survivor], {m: histories[m] for m in members}),
            policy,
            as_of=latest if as_of is None else max(as_of, latest),
        )
        return Group(survivor, members, state, self._store.heads([survivor, *members]))

    def load(self, customer_id: str, *, through_version: int) -> CustomerState:
        """The fold of the events with version ≤ ``through_version``, evaluated at the
        latest of their instants: exactly what applying them live gives, before any
        timer advanced it (the projector's next tick does that)."""
        policy = self._reader.policy
        try:
            events = self._reader.events(customer_id, through_version=through_version)
        except CustomerNotFoundError:
            events = []
        if not own(events):
            return initial_state(customer_id, policy)
        return fold(customer_id, own(events), policy, as_of=state_instant(events))


def state_instant(events: Sequence[InputEvent]) -> datetime:
    """The latest instant of a history: where a fold of it stands when loaded."""
    return max(event.occurred_at for event in events)


def _rank(row: ReadModelRow) -> tuple[int, int, datetime]:
    """The order `upsert` keeps rows in, as its SQL rule does (NULL: earliest)."""
    return (row.applied_version, row.applied_position, row.snapshot.evaluated_at or _NEVER)


def _json_default(value: object) -> object:
    """What orjson does not encode itself (decimals, other mappings, sets), converted by
    `json_safe` as `to_dict` converts it."""
    converted = json_safe(value)
    if converted is value:
        raise TypeError(f"not JSON: {type(value).__name__}")
    return converted


_FRAGMENTS: dict[int, tuple[object, orjson.Fragment]] = {}
"""Encoded thresholds by the identity of their mapping (kept alive here, so an id is
never reused while cached): the churn reasons share their policy's thresholds, curve
knots that would otherwise be encoded decimal by decimal in every read model."""
_FRAGMENTS_MAX: Final = 4096


def _thresholds(value: Mapping[str, Any]) -> orjson.Fragment:
    known = _FRAGMENTS.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    fragment = orjson.Fragment(
        orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    )
    if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
        _FRAGMENTS.clear()
    _FRAGMENTS[id(value)] = (value, fragment)
    return fragment


def _reason(reason: Reason) -> dict[str, Any]:
    """`Reason.to_dict`, for orjson: the same keys in the same order."""
    return {
        "rule": reason.rule,
        "message": reason.message,
        "policy_version": reason.policy_version,
        "inputs": reason.inputs,
        "thresholds": _thresholds(reason.thresholds),
        "event_ids": reason.event_ids,
        "points": None if reason.points is None else str(reason.points),
    }


def snapshot_json(snapshot: Snapshot) -> bytes:
    """``orjson.dumps(snapshot.to_dict())``, byte for byte, at a fraction of its cost: the
    reasons (~15 per read model, with ~200 decimals) go to orjson without `json_safe`,
    and the thresholds the churn reasons share with their policy are encoded once (the
    read model's JSON was 40 % of the projector's own time; docs/scaling.md;
    tests/unit/test_readmodel_json.py holds the two equal)."""
    return orjson.dumps(
        snapshot.to_dict(reason=_reason), default=_json_default, option=orjson.OPT_NON_STR_KEYS
    )


def _arrays(rows: Sequence[ReadModelRow]) -> tuple[list[Any], ...]:
    """One array per column of `_COLUMNS`: the parameters of `_UNNEST_ARGS`."""
    snapshots = [row.snapshot for row in rows]
    return (
        [row.customer_id for row in rows],
        [customer_uuid(row.customer_id) for row in rows],
        [row.applied_version for row in rows],
        [row.applied_position for row in rows],
        [row.next_deadline for row in rows],
        [s.evaluated_at for s in snapshots],
        [s.tier for s in snapshots],
        [s.lifecycle_stage for s in snapshots],
        [s.churn_score for s in snapshots],
        [s.churn_level for s in snapshots],
        [s.alert_state for s in snapshots],
        [s.alert_id for s in snapshots],
        [snapshot_json(s).decode() for s in snapshots],
    )


def _chunks(rows: Iterable[ReadModelRow], size: int) -> Iterator[list[ReadModelRow]]:
    chunk: list[ReadModelRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _selected() -> Composed:
    return SQL(", ").join(
        SQL("u.snapshot::jsonb") if c == "snapshot" else SQL("u.{}").format(Identifier(c))
        for c in _COLUMNS
    )


def _read_model(row: dict[str, Any]) -> ReadModel:
    return ReadModel(
        customer_id=row["customer_id"],
        applied_version=row["applied_version"],
        applied_position=row["applied_position"],
        next_deadline=row["next_deadline"],
        evaluated_at=row["evaluated_at"],
        tier=row["tier"],
        lifecycle_stage=row["lifecycle_stage"],
        churn_score=row["churn_score"],
        churn_level=row["churn_level"],
        alert_state=row["alert_state"],
        alert_id=row["alert_id"],
        snapshot=row["snapshot"],
        updated_at=row["updated_at"],
    )


COMPARED = ("tier", "lifecycle_stage", "churn_score", "churn_level", "alert_state", "alert_id")


@dataclass(frozen=True, slots=True)
class Difference:
    """A read model that does not equal a fresh fold of its customer's stored events."""

    customer_id: str
    field: str
    live: object
    replayed: object


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the audit needs of a read model: which events it includes, when it was
    evaluated, until when it holds, and the values compared with a replay."""

    customer_id: str
    applied_version: int
    evaluated_at: datetime | None
    next_deadline: datetime | None
    tier: str | None
    lifecycle_stage: str | None
    churn_score: Decimal | None
    churn_level: str | None
    alert_state: str | None
    alert_id: str | None


@dataclass
class Audit:
    """Read models compared with the store as sets (RELIABILITY G14), not only the
    rows that exist: see `audit`."""

    customers: int = 0
    read_models: int = 0
    missing: list[tuple[str, int]] = field(default_factory=list)
    """``(customer_id, stored version)`` of stored customers without a read model."""
    extra: list[tuple[str, int]] = field(default_factory=list)
    """``(customer_id, applied version)`` of read models of no stored customer."""
    stale: list[tuple[str, int, int]] = field(default_factory=list)
    """``(customer_id, applied, stored)`` of read models behind the stored version."""
    ahead: list[tuple[str, int, int]] = field(default_factory=list)
    """``(customer_id, applied, stored)`` of read models past it (a store that lost events)."""
    overdue: list[tuple[str, datetime]] = field(default_factory=list)
    """``(customer_id, next deadline)`` of read models a timer should have advanced."""
    future: list[tuple[str, datetime]] = field(default_factory=list)
    """``(customer_id, evaluated_at)`` of read models evaluated after ``now``: they hold
    the projector's writes off (the write rule keeps the later evaluation)."""
    differences: list[Difference] = field(default_factory=list)
    damaged: list[tuple[str, int]] = field(default_factory=list)
    """``(customer_id, version)`` of stored events whose bytes do not decode."""

    @property
    def unapplied_events(self) -> int:
        """Stored events no read model includes yet (projector lag, in events)."""
        return sum(stored for _, stored in self.missing) + sum(
            stored - applied for _, applied, stored in self.stale
        )


def audit(
    read_models: ReadModelStore,
    store: CustomerStore,
    policy: Policy,
    *,
    now: datetime | None = None,
    grace: timedelta = timedelta(0),
) -> Audit:
    """Every stored customer against the read models, in one pass over the events table.

    A stored customer needs a read model at its latest version (else *missing* or
    *stale*); a read model needs a stored customer (else *extra*) and a version it can
    have (else *ahead*); its next deadline must not be more than ``grace`` before
    ``now``, nor its evaluation be more than ``grace`` after it (else *overdue*: no
    timer advanced it, so it no longer says what holds now; or *future*; both unchecked
    without ``now``); and its values must equal a fresh fold of the events it applied,
    evaluated at its own ``evaluated_at`` (else a `Difference`).
    """
    result = Audit()
    rows = read_models.stamps()
    result.read_models = len(rows)
    reader = ProjectionReader(store, policy)
    for history in reader.histories(on_damaged=lambda c, v: result.damaged.append((c, v))):
        result.customers += 1
        row = rows.pop(history.customer_id, None)
        if row is None:
            result.missing.append((history.customer_id, history.version))
            continue
        if row.applied_version < history.version:
            result.stale.append((row.customer_id, row.applied_version, history.version))
        elif row.applied_version > history.version:
            result.ahead.append((row.customer_id, row.applied_version, history.version))
        if now is not None:
            if row.next_deadline is not None and row.next_deadline < now - grace:
                result.overdue.append((row.customer_id, row.next_deadline))
            if row.evaluated_at is not None and row.evaluated_at > now + grace:
                result.future.append((row.customer_id, row.evaluated_at))
        if linked(history.events):
            result.differences.extend(_compare_linked(row, reader))
            continue
        applied = [e for e in history.events if e.version <= row.applied_version]
        result.differences.extend(_compare(row, applied, policy))
    result.extra.extend((row.customer_id, row.applied_version) for row in rows.values())
    return result


def differences(
    read_models: ReadModelStore, store: CustomerStore, policy: Policy
) -> Iterator[Difference]:
    """Live equals replay (RELIABILITY G6) for the read models that exist: each refolded
    from the store through the version it applied, evaluated at its `evaluated_at`."""
    yield from audit(read_models, store, policy).differences


def _compare(row: Stamp, events: Sequence[InputEvent], policy: Policy) -> Iterator[Difference]:
    as_of = row.evaluated_at or (events[-1].occurred_at if events else None)
    if as_of is None:
        return
    fresh = snapshot(fold(row.customer_id, events, policy, as_of=as_of))
    for name in COMPARED:
        live, replayed = getattr(row, name), getattr(fresh, name)
        if live != replayed:
            yield Difference(row.customer_id, name, live, replayed)


def _compare_linked(row: Stamp, reader: ProjectionReader) -> Iterator[Difference]:
    """`_compare` for a customer ever named by a merge: the fresh answer resolves the
    links as `customer` does (the partners' histories as stored now, docs/identity.md)."""
    histories = reader.group(row.customer_id)
    own_history = [e for e in histories[row.customer_id] if e.version <= row.applied_version]
    histories[row.customer_id] = own_history
    as_of = row.evaluated_at or (own_history[-1].occurred_at if own_history else None)
    if as_of is None:
        return
    fresh = view(row.customer_id, histories, reader.policy, as_of=as_of)
    for name in COMPARED:
        live, replayed = getattr(row, name), getattr(fresh, name)
        if live != replayed:
            yield Difference(row.customer_id, name, live, replayed)


def rebuild(
    read_models: ReadModelStore,
    store: CustomerStore,
    policy: Policy,
    *,
    as_of: datetime,
    batch: int = 1000,
    on_progress: Callable[[int], None] = lambda done: None,
) -> int:
    """Recompute every customer's read model from the stored events, as of ``as_of``,
    and swap them in atomically (`ReadModelStore.replace`): readers never see old and
    new rows mixed, rows of customers no longer in the store go, and what the projector
    writes meanwhile is kept when it is further along. Returns the read models after."""
    return read_models.replace(
        rebuilt_rows(store, policy, as_of=as_of), batch=batch, on_progress=on_progress
    )


def rebuilt_rows(
    store: CustomerStore, policy: Policy, *, as_of: datetime
) -> Iterator[ReadModelRow]:
    """Every customer's read model folded from its stored events, as of ``as_of``."""
    positions = store.last_positions()
    reader = ProjectionReader(store, policy)
    for history in reader.histories():
        if linked(history.events):
            yield _linked_row(reader, history, positions, as_of)
            continue
        state = fold(history.customer_id, history.events, policy, as_of=as_of)
        yield ReadModelRow(
            history.customer_id,
            snapshot(state),
            history.version,
            positions[history.customer],
            next_deadline(state),
        )


def _linked_row(
    reader: ProjectionReader, history: History, positions: dict[UUID, int], as_of: datetime
) -> ReadModelRow:
    """The rebuilt read model of a customer ever named by a merge (docs/identity.md):
    a merged customer shows its survivor's union and has no timer of its own."""
    histories = reader.group(history.customer_id)
    config, state = group_state(history.customer_id, histories, reader.policy, as_of=as_of)
    group = (config.survivor, *config.absorbed)
    position = max(positions.get(customer_uuid(c), 0) for c in (*group, history.customer_id))
    return ReadModelRow(
        history.customer_id,
        as_member(history.customer_id, config, snapshot(state)),
        history.version,
        position,
        None if config.role == "merged" else next_deadline(state),
    )
