"""The deterministic heart of the `project` role, independent of faust.

The faust agent hands batches of `customer-events` messages to `Projector.handle` and a
timer calls `Projector.tick`; everything with I/O (the store, PostgreSQL read models,
Kafka producers) comes in through the three ports of `projections.ports`, implemented
in `adapters` and wired in `infra`, so this module imports only `projections` (and
orjson, for the bytes of the `customer-events` message `projections.messages` defines).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from projections.identity import (
    IDENTITY_KINDS,
    Configuration,
    Role,
    as_member,
    identity_changes,
    union,
)
from projections.messages import CustomerEvent, WireError, decode_customer_event
from projections.model import InputEvent, Snapshot, from_micros, to_micros
from projections.ports import (
    ChangePublisher,
    Group,
    GroupLoader,
    Projected,
    ReadModelRow,
    ReadModelSink,
    StateLoader,
)

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

    *Reloads resume where the last worker stopped.* A worker that projected the
    customer before (this one before a restart, or the previous owner of its
    partition) published every change up to its stored read model
    (`StateLoader.projected`), possibly advanced by its timer past the last event, and
    possibly through later versions than the message (a redelivery). A reload starts
    from that state: a message the read model already includes is a duplicate, and an
    event before its clock is a late one, refolded and corrected (so a subscriber's
    view, which went on from what was published, is corrected too).

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
        groups: GroupLoader | None = None,
    ) -> None:
        self._policy = policy
        self._loader = loader
        self._groups = groups
        self._survivor_of: dict[str, str] = {}
        """Merged customer -> its survivor, for the groups this worker holds."""
        self._members: dict[str, tuple[str, ...]] = {}
        """Survivor -> the customers merged into it, for the groups this worker holds."""
        self._sink = sink
        self._publisher = publisher
        self._held: dict[str, _Held] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._projected: Mapping[str, Projected] = {}
        """The stored read models of the customers the current call may reload."""

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
            self._look_up(
                customer_id
                for customer_id, version, _, _ in messages
                if (held := self._held.get(customer_id)) is None or version > held.version + 1
            )
            for message in messages:
                self._fold(message, changes, touched)
            self._emit(changes, self._settle(touched))
        except BaseException:
            self._drop(touched)
            raise
        finally:
            self._projected = {}
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
        self._forget_projected_elsewhere(due)
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
        customers = [
            (customer_id, version, position)
            for customer_id, version, position in customers
            if (held := self._held.get(customer_id)) is None or held.version < version
        ]
        try:
            self._look_up(customer_id for customer_id, _, _ in customers)
            for customer_id, version, position in customers:
                self._resume_one(customer_id, version, position)
                loaded += 1
        finally:
            self._projected = {}
        return loaded

    def _resume_one(self, customer_id: str, version: int, position: int) -> None:
        if self._groups is not None:
            group = self._groups.load_group(customer_id, as_of=None, through_version=version)
            if group.members:
                self._unlink(customer_id)
                self._install(group, {}, {}, [], None, customer_id)
                self._schedule(group.survivor, self._held[group.survivor])
                return
            held = self._resumed(customer_id, version + 1, position, group.state)
        else:
            held = self._resumed(customer_id, version + 1, position)
        self._held[customer_id] = held
        self._schedule(customer_id, held)

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
        if self._groups is not None and (
            (event is not None and event.kind in IDENTITY_KINDS)
            or ((held is None or version > applied + 1) and version > 2)
        ):
            if self._fold_group(message, changes, touched):
                return
            held = self._held.get(customer_id)
            applied = 0 if held is None else held.version
        if held is None or version > applied + 1:
            held = self._resumed(customer_id, version, position)
            self._held[customer_id] = held
            applied = held.version
        if version <= applied:  # the stored read model includes it: published already
            self._schedule(customer_id, held)
            return
        touched[customer_id] = held
        if event is not None:
            if customer_id in self._survivor_of:
                event = union([], {customer_id: [event]})[0]  # its id as in the union
            changes.extend(apply(held.state, event)[1])
        held.version = version
        held.position = position

    def _fold_group(
        self, message: CustomerEvent, changes: list[Change], touched: dict[str, _Held]
    ) -> bool:
        """Identity resolution (docs/identity.md). A merge or unmerge, or a customer this
        worker must (re)load, is resolved against the store: the groups of every customer
        concerned are refolded from all their stored events, each member then shows its
        survivor's union, and each customer whose view moved gets the changes (with the
        link's reason). Both sides of a link are stored in one transaction, so the first
        of its two messages does the work and the second is a duplicate. Returns False
        for an unlinked customer (its state is loaded through the version before the
        message): the ordinary path goes on."""
        assert self._groups is not None
        customer_id, version, position, event = message
        identity = event is not None and event.kind in IDENTITY_KINDS
        affected = dict.fromkeys(self._group_of(customer_id))
        if identity:
            assert event is not None
            affected.update(dict.fromkeys(str(event.facts[k]) for k in ("survivor", "merged")))
        before = {c: self._view(c) for c in affected}
        as_of = max(
            (
                from_micros(h.state.clock)
                for c in before
                if (h := self._held.get(c)) is not None and h.state.clock is not None
            ),
            default=None,
        )
        if event is not None:
            as_of = event.occurred_at if as_of is None else max(as_of, event.occurred_at)
        whole = identity or len(affected) > 1  # a link moves, or one this worker holds
        first = self._groups.load_group(
            customer_id, as_of=as_of, through_version=None if whole else version - 1
        )
        if not whole and not first.members:
            self._unlink(customer_id)
            self._held[customer_id] = self._resumed(customer_id, version, position, first.state)
            return False
        groups = {first.survivor: first}
        for customer in [*affected]:
            if not any(customer in g.customers for g in groups.values()):
                group = self._groups.load_group(customer, as_of=as_of, through_version=None)
                groups[group.survivor] = group
        for group in groups.values():
            for customer in group.customers:
                before.setdefault(customer, self._view(customer))
        for customer in before:
            self._unlink(customer)
        for group in groups.values():
            self._install(group, before, touched, changes, event, customer_id)
        return True

    def _install(  # noqa: PLR0917
        self,
        group: Group,
        before: dict[str, Snapshot | None],
        touched: dict[str, _Held],
        changes: list[Change],
        event: InputEvent | None,
        customer_id: str,
    ) -> None:
        if group.members:
            self._members[group.survivor] = group.members
        for member in group.members:
            self._survivor_of[member] = group.survivor
        for customer in group.customers:
            head = group.heads.get(customer)
            if head is None:
                continue
            held = self._held.get(customer)
            if held is None or held.version < head[0]:
                held = _Held(group.state, *head)
            held.state = group.state
            self._held[customer] = held
            touched[customer] = held
            old = before.get(customer)
            if old is not None and event is not None:
                after = self._member_view(customer, group)
                changes.extend(identity_changes(old, after, _cause(event, customer_id)))

    def _group_of(self, customer_id: str) -> tuple[str, ...]:
        survivor = self._survivor_of.get(customer_id, customer_id)
        return (survivor, *self._members.get(survivor, ()))

    def _unlink(self, customer_id: str) -> None:
        for member in self._members.pop(customer_id, ()):
            self._survivor_of.pop(member, None)
        self._survivor_of.pop(customer_id, None)

    def _view(self, customer_id: str) -> Snapshot | None:
        held = self._held.get(customer_id)
        if held is None:
            return None
        survivor = self._survivor_of.get(customer_id)
        config = Configuration(
            None if survivor is None else "merged", customer_id if survivor is None else survivor
        )
        return as_member(customer_id, config, snapshot(held.state))

    def _member_view(self, customer_id: str, group: Group) -> Snapshot:
        role: Role | None = "merged" if customer_id in group.members else None
        return as_member(customer_id, Configuration(role, group.survivor), snapshot(group.state))

    def _forget_projected_elsewhere(self, due: dict[str, _Held]) -> None:
        """Drop the due customers whose stored read model includes events this worker
        has not applied: another worker projects them now (this one lost their
        partition and has not heard yet, or was frozen past its session). Advancing
        the stale state would publish changes the history does not have, after that
        worker's; if the customer is still ours, its next message or `resume`
        reloads it."""
        alone = [c for c in due if c not in self._members]
        if not alone:
            return
        for customer_id, seen in self._loader.projected(alone).items():
            if seen.version > due[customer_id].version:
                del due[customer_id]
                del self._held[customer_id]

    def _look_up(self, customer_ids: Iterable[str]) -> None:
        wanted = sorted(set(customer_ids))
        self._projected = self._loader.projected(wanted) if wanted else {}

    def _resumed(
        self, customer_id: str, version: int, position: int, state: CustomerState | None = None
    ) -> _Held:
        """The customer reloaded for its message ``version``: from the store through
        ``version - 1`` (``state``, if already loaded so), or through the stored read
        model's version if that is later; advanced to the read model's clock."""
        seen = self._projected.get(customer_id)
        if seen is None or seen.version < version - 1:
            if state is None:
                state = self._load(customer_id, version - 1)
            return _Held(state, version - 1, position)
        if seen.version > version - 1:
            if self._groups is not None:
                group = self._groups.load_group(
                    customer_id, as_of=None, through_version=seen.version
                )
                if group.members:  # linked since: the group path refolds it
                    if state is None:
                        state = self._load(customer_id, version - 1)
                    return _Held(state, version - 1, position)
                state = group.state
            else:
                state = self._load(customer_id, seen.version)
            version, position = seen.version + 1, seen.position
        elif state is None:
            state = self._load(customer_id, version - 1)
        at = seen.evaluated_at
        if at is not None and state.clock is not None and to_micros(at) > state.clock:
            advance(state, at)  # what that worker published up to its clock
        return _Held(state, version - 1, position)

    def _load(self, customer_id: str, through_version: int) -> CustomerState:
        if through_version <= 1:
            return initial_state(customer_id, self._policy)
        return self._loader.load(customer_id, through_version=through_version)

    def _settle(self, touched: dict[str, _Held]) -> list[ReadModelRow]:
        for customer in list(touched):
            for other in self._group_of(customer):  # a member's event moves its group
                if other in self._held:
                    touched.setdefault(other, self._held[other])
        rows = []
        for customer_id, held in touched.items():
            view = self._view(customer_id)
            assert view is not None
            if customer_id in self._survivor_of:
                held.deadline = None  # the survivor's timer advances the shared state
            else:
                self._schedule(customer_id, held)
            group = self._group_of(customer_id)
            position = max(self._held[c].position for c in group if c in self._held)
            rows.append(
                ReadModelRow(
                    customer_id=customer_id,
                    snapshot=view,
                    applied_version=held.version,
                    applied_position=max(held.position, position),
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


def _cause(event: InputEvent, customer_id: str) -> InputEvent:
    """The event a group refold reports its changes with: a merge or unmerge as it is;
    any other event of a linked customer as a refold of the group it belongs to."""
    if event.kind in IDENTITY_KINDS:
        return event
    return InputEvent(
        event_id=event.event_id,
        version=event.version,
        kind="identity_group_refolded",
        occurred_at=event.occurred_at,
        facts={"customer": customer_id, "kind": event.kind},
    )
