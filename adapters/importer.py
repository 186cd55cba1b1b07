"""Bulk historical import: the fast path into the same store, in the same format.

eventsourcing builds several Python objects per event and one INSERT per batch; for
years of history that is the bottleneck. This path writes rows with binary COPY but
keeps every rule of the normal path: the same transcoder and state (built by
`interaction_fields`), the same per-customer encryption and payload digest, the same
idempotency keys and dead letters, the same chain hashes, under the same EXCLUSIVE
table lock, so tailing readers miss nothing and either path reads back identically.

Preparing a batch (validation, digests, encryption, encoding) is pure CPU in Python
and needs no lock, so worker processes prepare the next batches while this process
commits the current one in input order; PostgreSQL's own work overlaps with both.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.errors import UniqueViolation
from psycopg.sql import SQL, Composed, Identifier

from adapters import pgcopy
from adapters.chain import GENESIS, content_digest, link_content
from adapters.codec import StateTranscoder, decode_wire
from adapters.crypto import MasterKey
from adapters.keyring import Keyring
from adapters.recorder import EVENTS_TABLE, KEYS_TABLE, DeadLetter, insert_dead_letters
from adapters.store import CustomerStore, encode_interaction
from domain.customer import Customer, customer_uuid
from domain.errors import Code, InvalidInteraction, Rejection
from domain.interactions import parse_interaction

CREATED_TOPIC = get_topic(Customer.Created)
RECORDED_TOPIC = get_topic(Customer.InteractionRecorded)
CUSTOMER_TOPIC = get_topic(Customer)


@dataclass(frozen=True, slots=True)
class LineRejected:
    """A bad input line, reported with its number and reasons."""

    line: int
    rejections: tuple[Rejection, ...]
    raw: bytes


@dataclass
class ImportSummary:
    lines: int = 0
    recorded: int = 0
    duplicate: int = 0
    rejected: int = 0
    customers_created: int = 0


class _Row(NamedTuple):
    """One prepared line (a NamedTuple: it crosses a process boundary, and pickles fast)."""

    line: int
    raw: bytes
    source: str
    event_id: str
    customer_id: str
    customer: UUID
    digest: str
    body: bytes
    """`pgcopy.event_body` of the event: its topic and stored state, ready to COPY."""
    content: bytes
    """`chain.content_digest` of the event: the costly part of its chain hash."""


class _Carried(NamedTuple):
    """What a rejected line carried of its identity, so its dead letter names the
    customer (erasure finds it by that) and its idempotency key."""

    source: str | None
    event_id: str | None
    customer_id: str | None

    @classmethod
    def of(cls, decoded: Any) -> _Carried | None:
        if not isinstance(decoded, dict):
            return None

        def text(name: str) -> str | None:
            value = decoded.get(name)
            return value[:256] if isinstance(value, str) and value else None

        return cls(text("source"), text("event_id"), text("customer_id"))


class _Created(NamedTuple):
    """A customer's creation event, prepared in case the customer turns out to be new."""

    body: bytes
    content: bytes


@dataclass
class _Batch:
    lines: int
    rows: list[_Row] = field(default_factory=list)
    created: dict[str, _Created] = field(default_factory=dict)
    rejected: list[LineRejected] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def reject(
        self, line: int, raw: bytes, rejections: Sequence[Rejection], who: Any = None
    ) -> None:
        rejected = LineRejected(line, tuple(rejections), raw)
        self.rejected.append(rejected)
        first = rejections[0]
        self.dead.append(
            DeadLetter(
                code=first.code,
                field=first.field,
                message=first.message,
                rejections=[r.as_dict() for r in rejections],
                payload=raw,
                source=getattr(who, "source", None),
                event_id=getattr(who, "event_id", None),
                customer_id=getattr(who, "customer_id", None),
                provenance={"import_line": line},
            )
        )


@dataclass
class _Written:
    recorded: int = 0
    duplicate: int = 0
    customers_created: int = 0
    conflicts: list[LineRejected] = field(default_factory=list)


@contextmanager
def _collections_between_batches() -> Iterator[None]:
    """Collect cycles between batches only, not during them.

    A batch allocates hundreds of thousands of short-lived, acyclic objects; left on,
    the cyclic collector rescans the live ones again and again (measured: the commit
    step slows down by half as the import goes on). Refcounting frees them anyway.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class PreparerConfig:
    """What a worker process needs to prepare batches on its own connection."""

    datastore: dict[str, Any]
    """Keyword arguments of `PostgresDatastore` (the application role's connection)."""
    master_key: str
    max_future_skew: timedelta
    cache_size: int


class BatchPreparer:
    """Validate, key, digest, encrypt and encode a batch: everything that needs no lock."""

    def __init__(
        self, keyring: Keyring, transcoder: StateTranscoder, max_future_skew: timedelta
    ) -> None:
        self._keyring = keyring
        self._encode = transcoder.encode
        self._skew = max_future_skew

    def prepare(self, chunk: Sequence[tuple[int, bytes]], now: datetime) -> _Batch:
        batch = _Batch(lines=len(chunk))
        valid = []
        for number, raw in chunk:
            decoded = None
            try:
                decoded = decode_wire(raw)
                interaction = parse_interaction(decoded, now=now, max_future_skew=self._skew)
            except InvalidInteraction as exc:
                batch.reject(number, raw, exc.rejections, _Carried.of(decoded))
                continue
            valid.append((number, raw, interaction, customer_uuid(interaction.customer_id)))
        keys, forgotten = self._keyring.ensure(v[3] for v in valid)
        encode = self._encode
        for number, raw, interaction, customer in valid:
            key = keys.get(customer)
            if key is None or customer in forgotten:
                batch.reject(
                    number,
                    raw,
                    (Rejection(Code.CUSTOMER_FORGOTTEN, "customer_id", "customer was erased"),),
                    interaction,
                )
                continue
            digest, state = encode_interaction(encode, key, interaction, now)
            batch.rows.append(
                _Row(
                    number,
                    raw,
                    interaction.source,
                    interaction.event_id,
                    interaction.customer_id,
                    customer,
                    digest,
                    pgcopy.event_body(RECORDED_TOPIC, state),
                    content_digest(RECORDED_TOPIC, state),
                )
            )
        for customer_id in {row.customer_id for row in batch.rows}:
            state = encode(
                {"timestamp": now, "originator_topic": CUSTOMER_TOPIC, "customer_id": customer_id}
            )
            batch.created[customer_id] = _Created(
                pgcopy.event_body(CREATED_TOPIC, state), content_digest(CREATED_TOPIC, state)
            )
        return batch


_WORKER: BatchPreparer | None = None


def _start_worker(config: PreparerConfig) -> None:
    global _WORKER  # noqa: PLW0603 - one preparer per worker process, built once
    datastore = PostgresDatastore(**config.datastore)
    keyring = Keyring(
        datastore, MasterKey.from_text(config.master_key), cache_size=config.cache_size
    )
    _WORKER = BatchPreparer(keyring, StateTranscoder(), config.max_future_skew)
    gc.disable()  # collected between batches, see _collections_between_batches


def _prepare_in_worker(chunk: Sequence[tuple[int, bytes]], now: datetime) -> _Batch:
    assert _WORKER is not None
    try:
        return _WORKER.prepare(chunk, now)
    finally:
        gc.collect(1)


class BulkImporter:
    """Imports JSON lines in large transactions; re-running a file records nothing new."""

    def __init__(
        self,
        store: CustomerStore,
        *,
        batch_size: int,
        clock: Callable[[], datetime],
        workers: int = 0,
        worker_config: PreparerConfig | None = None,
    ) -> None:
        self._store = store
        self._datastore = store.datastore
        self._batch_size = batch_size
        self._clock = clock
        self._workers = workers if worker_config is not None else 0
        self._worker_config = worker_config
        self._preparer = BatchPreparer(store.keyring, store.state_transcoder, store.max_future_skew)
        events = Identifier(self._datastore.schema, EVENTS_TABLE)
        keys = Identifier(self._datastore.schema, KEYS_TABLE)
        self._lock: list[Composed | SQL] = [
            SQL("SET LOCAL lock_timeout = '{}s'").format(self._datastore.lock_timeout),
            SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events),
            SQL("SET LOCAL jit = off"),  # compiling costs more than these lookups
        ]
        self._notify = SQL("NOTIFY {}").format(Identifier(EVENTS_TABLE))
        # One backward primary-key probe per customer (a plain ANY() plans a seq scan).
        self._heads = SQL(
            "SELECT h.* FROM unnest(%b::uuid[]) AS c(id) CROSS JOIN LATERAL ("
            " SELECT originator_id, originator_version, chain_hash FROM {} e"
            " WHERE e.originator_id = c.id ORDER BY originator_version DESC LIMIT 1) h"
        ).format(events)
        self._existing = SQL(
            "SELECT source, event_id, customer_id, digest FROM {} "
            "WHERE (source, event_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
        ).format(keys)
        self._copy_events = SQL(
            "COPY {} (originator_id, originator_version, topic, state, chain_hash) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(events)
        self._copy_keys = SQL(
            "COPY {} (source, event_id, customer_id, originator_version, digest) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(keys)

    def run(
        self,
        lines: Iterable[bytes],
        *,
        on_progress: Callable[[int], None] = lambda n: None,
        on_reject: Callable[[LineRejected], None] = lambda r: None,
        expected_lines: int | None = None,
    ) -> ImportSummary:
        """Import every line; `on_progress` gets the number of lines done after each batch.

        Worker processes are used only when the input is large enough to repay their
        start-up (about a second); small imports prepare in this process.
        """
        summary = ImportSummary()
        chunks = self._chunks(lines)
        use_workers = self._workers > 0 and (
            expected_lines is None or expected_lines >= 4 * self._batch_size
        )
        with _collections_between_batches():
            if use_workers:
                batches = self._prepared_by_workers(chunks)
            else:
                batches = (self._preparer.prepare(chunk, self._clock()) for chunk in chunks)
            for batch in batches:
                written = self._commit(batch)
                for rejected in (*batch.rejected, *written.conflicts):
                    on_reject(rejected)
                summary.lines += batch.lines
                summary.recorded += written.recorded
                summary.duplicate += written.duplicate
                summary.customers_created += written.customers_created
                summary.rejected += len(batch.rejected) + len(written.conflicts)
                on_progress(summary.lines)
                gc.collect(1)
        return summary

    def _prepared_by_workers(self, chunks: Iterator[list[tuple[int, bytes]]]) -> Iterator[_Batch]:
        """Prepared batches in input order, with a few in flight ahead of the commits.

        The first chunk is prepared here while the workers start (about a second).
        """
        assert self._worker_config is not None
        first = next(chunks, None)
        if first is None:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._worker_config,),
        ) as pool:
            in_flight: deque[Future[_Batch]] = deque()

            def submit_ahead() -> None:
                while len(in_flight) <= self._workers:
                    chunk = next(chunks, None)
                    if chunk is None:
                        return
                    in_flight.append(pool.submit(_prepare_in_worker, chunk, self._clock()))

            submit_ahead()
            yield self._preparer.prepare(first, self._clock())
            while in_flight:
                batch = in_flight.popleft().result()
                submit_ahead()
                yield batch

    def _chunks(self, lines: Iterable[bytes]) -> Iterator[list[tuple[int, bytes]]]:
        chunk: list[tuple[int, bytes]] = []
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if stripped:
                chunk.append((number, stripped))
            if len(chunk) >= self._batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _commit(self, batch: _Batch) -> _Written:
        """One transaction under the table lock: classify, chain, COPY, dead letters."""
        written = _Written()
        with self._datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            for statement in self._lock:
                curs.execute(statement)
            self._write_rows(curs, batch, written)
            insert_dead_letters(curs, self._datastore.schema, batch.dead)
            curs.execute(self._notify)
        return written

    def _write_rows(self, curs: Cursor[Any], batch: _Batch, written: _Written) -> None:
        """Optimistically COPY the keys as all-new; only if one exists, look them up.

        A first import (the case that must be fast) then never pays for the lookup;
        a re-run fails its first key at once and takes the careful path.
        """
        rows = batch.rows
        if not rows:
            return
        curs.execute(self._heads, (list({r.customer for r in rows}),), binary=True)
        heads: dict[UUID, tuple[int, bytes]] = {
            r["originator_id"]: (r["originator_version"], bytes(r["chain_hash"]))
            for r in curs.fetchall()
        }
        plan = _plan(rows, {}, heads, batch.created)
        try:
            with curs.connection.transaction():
                self._copy(curs, self._copy_keys, pgcopy.keys(plan.key_rows))
        except UniqueViolation:
            curs.execute(
                self._existing,
                ([r.source for r in rows], [r.event_id for r in rows]),
                binary=True,
            )
            existing = {
                (r["source"], r["event_id"]): (r["customer_id"], r["digest"])
                for r in curs.fetchall()
            }
            plan = _plan(rows, existing, heads, batch.created)
            self._copy(curs, self._copy_keys, pgcopy.keys(plan.key_rows))
        self._copy(curs, self._copy_events, pgcopy.events(plan.events))
        written.recorded, written.duplicate = len(plan.key_rows), plan.duplicates
        written.customers_created = plan.customers_created
        if plan.conflicts:
            conflict_batch = _Batch(lines=0)
            for row in plan.conflicts:
                rejection = Rejection(
                    Code.CONFLICTING_DUPLICATE,
                    "event_id",
                    f"({row.source!r}, {row.event_id!r}) was already recorded with another payload",
                )
                conflict_batch.reject(row.line, row.raw, (rejection,), row)
            written.conflicts = conflict_batch.rejected
            insert_dead_letters(curs, self._datastore.schema, conflict_batch.dead)

    @staticmethod
    def _copy(curs: Cursor[Any], statement: Composed, data: bytes) -> None:
        if len(data) > len(pgcopy.HEADER) + len(pgcopy.TRAILER):
            with curs.copy(statement) as copy:
                copy.write(data)


@dataclass
class _Plan:
    events: list[tuple[UUID, int, bytes, bytes]] = field(default_factory=list)
    key_rows: list[tuple[str, str, UUID, int, str]] = field(default_factory=list)
    conflicts: list[_Row] = field(default_factory=list)
    duplicates: int = 0
    customers_created: int = 0


def _plan(
    rows: Sequence[_Row],
    existing: dict[tuple[str, str], tuple[UUID, str]],
    stored_heads: dict[UUID, tuple[int, bytes]],
    created: dict[str, _Created],
) -> _Plan:
    """Classify each row (new / duplicate / conflict) and chain the new ones."""
    plan = _Plan()
    heads = dict(stored_heads)
    seen = dict(existing)

    def append(customer: UUID, body: bytes, content: bytes) -> int:
        version, previous = heads.get(customer, (0, GENESIS))
        version += 1
        value = link_content(previous, customer, version, content)
        heads[customer] = (version, value)
        plan.events.append((customer, version, body, value))
        return version

    for row in rows:
        key = (row.source, row.event_id)
        previous = seen.get(key)
        if previous is not None:
            if previous == (row.customer, row.digest):
                plan.duplicates += 1
            else:
                plan.conflicts.append(row)
            continue
        if row.customer not in heads:
            append(row.customer, *created[row.customer_id])
            plan.customers_created += 1
        version = append(row.customer, row.body, row.content)
        seen[key] = (row.customer, row.digest)
        plan.key_rows.append((row.source, row.event_id, row.customer, version, row.digest))
    return plan
