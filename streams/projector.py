"""The deterministic heart of the `project` role, independent of faust.

The faust agent hands batches of `customer-events` messages to `Projector.handle` and a
timer calls `Projector.tick`; everything with I/O (the store, PostgreSQL read models,
Kafka producers) comes in through the three ports of `projections.ports`, implemented
in `adapters` and wired in `infra`, so this module imports only `projections` (and
orjson, for the bytes of the `customer-events` message `projections.messages` defines).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from projections import (
    Change,
    CustomerState,
    Policy,
    advance,
    apply,
    initial_state,
    next_deadline,
    snapshot,
)
from projections.messages import CustomerEvent, WireError, decode_customer_event
from projections.ports import ChangePublisher, ReadModelRow, ReadModelSink, StateLoader

_HEAP_SLACK = 1024
"""Stale heap entries tolerated beyond twice the live ones before the heap is rebuilt."""


def parse_customer_event(message: bytes) -> CustomerEvent:
    """Decode one `customer-events` message; raise `WireError` naming what is wrong."""
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"not JSON: {exc}") from None
    return decode_customer_event(data)


@dataclass(slots=True)
class _Held:
    state: CustomerState
    version: int
    position: int
    deadline: datetime | None = None


class Projector:
    """Folds relayed customer events into states, read models and change events.

    *Versions.* The relay is at least once and in per-customer order, so a message at
    or below the applied version is a duplicate and is ignored. A message past
    ``applied + 1`` means this worker's state is stale (another worker projected the
    customer meanwhile) or missing (a restart): the state is rebuilt from the store
    through the version before it, and the message is then applied live so its
    changes are published. Version 1 is always the Created event, which projections
    ignore, so rebuilding through version 1 needs no store round trip.

    *Time.* Time-driven changes are found by deadline: a heap of ``(deadline,
    customer_id)``, lazily invalidated (an entry counts only while it equals the
    customer's current deadline). `tick` advances each due customer to ``now``; the
    changes carry the computed deadlines as ``effective_at``, so live equals replay
    however late the timer fires.

    *Effects.* After each call: `ChangePublisher.publish` first, then
    `ReadModelSink.upsert` (each at most once, skipped when empty). A crash between the
    two leaves the read model behind, so the work is redone and the changes published
    again: at least once, never lost; consumers dedupe on ``alert_id`` /
    ``effective_at`` (G7). The reverse order could lose changes for good.

    *Failures.* If anything raises after states were mutated (the loader, the
    publisher, the sink), every customer the call touched is dropped from memory, so a
    redelivery rebuilds it from the store and publishes again, instead of being
    ignored as a duplicate of work whose effects never landed.

    *Memory.* States live in a dict that is only a cache: losing it costs reloads.
    After a restart, `resume` re-adopts the customers whose stored read models have a
    due deadline, since no message may ever arrive for them again.

    *Ownership.* One projector per set of partitions; on a rebalance, `retain` drops
    the customers this worker no longer owns, so it does not tick stale states.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        loader: StateLoader,
        sink: ReadModelSink,
        publisher: ChangePublisher,
    ) -> None:
        self._policy = policy
        self._loader = loader
        self._sink = sink
        self._publisher = publisher
        self._held: dict[str, _Held] = {}
        self._heap: list[tuple[datetime, str]] = []

    def __len__(self) -> int:
        return len(self._held)

    def applied_version(self, customer_id: str) -> int | None:
        """The version this worker has applied for the customer (None: not held)."""
        held = self._held.get(customer_id)
        return None if held is None else held.version

    def handle(self, batch: Sequence[bytes]) -> list[Change]:
        """Fold a batch of `customer-events` messages; returns the changes published.

        The whole batch is parsed before any state changes, so a malformed message
        (`projections.messages.WireError`) leaves the projector exactly as it was.
        """
        messages = [parse_customer_event(message) for message in batch]
        changes: list[Change] = []
        touched: dict[str, _Held] = {}
        try:
            for message in messages:
                self._fold(message, changes, touched)
            self._emit(changes, self._settle(touched))
        except BaseException:
            self._drop(touched)
            raise
        return changes

    def tick(self, now: datetime) -> list[Change]:
        """Advance every held customer whose next deadline is at or before ``now``."""
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        due: dict[str, _Held] = {}
        while self._heap and self._heap[0][0] <= now:
            deadline, customer_id = heapq.heappop(self._heap)
            held = self._held.get(customer_id)
            if held is not None and held.deadline == deadline:
                due[customer_id] = held
        changes: list[Change] = []
        try:
            for held in due.values():
                changes.extend(advance(held.state, now)[1])
            self._emit(changes, self._settle(due))
        except BaseException:
            self._drop(due)
            raise
        return changes

    def resume(self, customers: Iterable[tuple[str, int, int]]) -> int:
        """Hold ``(customer_id, applied_version, applied_position)`` customers from the
        read models (those with a due deadline) so the next `tick` advances them; a
        customer already held at that version or later is left alone. Returns how many
        were loaded. Nothing is published or written: their state has not changed."""
        loaded = 0
        for customer_id, version, position in customers:
            held = self._held.get(customer_id)
            if held is not None and held.version >= version:
                continue
            held = _Held(self._load(customer_id, version), version, position)
            self._held[customer_id] = held
            self._schedule(customer_id, held)
            loaded += 1
        return loaded

    def retain(self, owned: Callable[[str], bool]) -> int:
        """Drop every held customer for which ``owned`` is false; returns how many."""
        gone = [customer_id for customer_id in self._held if not owned(customer_id)]
        for customer_id in gone:
            del self._held[customer_id]
        self._compact()
        return len(gone)

    # --- steps -----------------------------------------------------------------

    def _fold(
        self, message: CustomerEvent, changes: list[Change], touched: dict[str, _Held]
    ) -> None:
        customer_id, version, position, event = message
        held = self._held.get(customer_id)
        applied = 0 if held is None else held.version
        if version <= applied:
            return
        if held is None or version > applied + 1:
            held = _Held(self._load(customer_id, version - 1), version - 1, position)
            self._held[customer_id] = held
        touched[customer_id] = held
        if event is not None:
            changes.extend(apply(held.state, event)[1])
        held.version = version
        held.position = position

    def _load(self, customer_id: str, through_version: int) -> CustomerState:
        if through_version <= 1:
            return initial_state(customer_id, self._policy)
        return self._loader.load(customer_id, through_version=through_version)

    def _settle(self, touched: dict[str, _Held]) -> list[ReadModelRow]:
        rows = []
        for customer_id, held in touched.items():
            self._schedule(customer_id, held)
            rows.append(
                ReadModelRow(
                    customer_id=customer_id,
                    snapshot=snapshot(held.state),
                    applied_version=held.version,
                    applied_position=held.position,
                    next_deadline=held.deadline,
                )
            )
        self._compact()
        return rows

    def _schedule(self, customer_id: str, held: _Held) -> None:
        held.deadline = next_deadline(held.state)
        if held.deadline is not None:
            heapq.heappush(self._heap, (held.deadline, customer_id))

    def _emit(self, changes: list[Change], rows: list[ReadModelRow]) -> None:
        if changes:
            self._publisher.publish(changes)
        if rows:
            self._sink.upsert(rows)

    def _drop(self, customers: dict[str, _Held]) -> None:
        for customer_id in customers:
            self._held.pop(customer_id, None)

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._held) + _HEAP_SLACK:
            self._heap = [
                (held.deadline, customer_id)
                for customer_id, held in self._held.items()
                if held.deadline is not None
            ]
            heapq.heapify(self._heap)
