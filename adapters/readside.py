"""From stored events to what the projections fold: the one mapping, used by the CLI's
read commands, the relay (which publishes it) and `verify`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from adapters.store import CustomerNotFoundError, CustomerStore
from domain.customer import Customer
from projections import InputEvent, Policy, ReplayStep, Snapshot, fold, snapshot
from projections.identity import identity_replay, linked, partners, view
from projections.vocabulary import ops_kind

CREATED = get_topic(Customer.Created)
RECORDED = get_topic(Customer.InteractionRecorded)
ALERT_ACTION = get_topic(Customer.AlertActionRecorded)
IDENTITY_LINK = get_topic(Customer.IdentityLinkRecorded)


def input_event(version: int, topic: str, state: dict[str, Any]) -> InputEvent | None:
    """The projection input of a stored event (None for events projections ignore).

    Personal data never crosses this line: projections fold facts only, and what the
    relay publishes to Kafka derives from this, so topics hold nothing to erase.
    """
    if topic == RECORDED:
        return InputEvent(
            event_id=f"{state['source']}/{state['event_id']}",
            version=version,
            kind=state["kind"],
            occurred_at=state["occurred_at"],
            amount=state.get("amount"),
            currency=state.get("currency"),
            facts=state.get("facts") or {},
        )
    if topic == ALERT_ACTION:
        facts: dict[str, Any] = {
            "alert_id": state["alert_id"],
            "by": state["by"],
            "reason": state["reason"],
        }
        if state.get("until") is not None:
            facts["until"] = state["until"]
        return InputEvent(
            event_id=f"ops/v{version}",
            version=version,
            kind=ops_kind(state["action"]),
            occurred_at=state["occurred_at"],
            facts=facts,
        )
    if topic == IDENTITY_LINK:
        return InputEvent(
            event_id=f"identity/v{version}",
            version=version,
            kind=f"identity_{state['action']}",
            occurred_at=state["occurred_at"],
            facts={k: state[k] for k in ("survivor", "merged", "by", "reason")},
        )
    return None


def customer_id_of(topic: str, state: dict[str, Any]) -> str | None:
    """The upstream customer id, carried by each customer's first (Created) event."""
    return state["customer_id"] if topic == CREATED else None


class ProjectionReader:
    """Folds customers from the store on demand: works whether or not the streaming
    pipeline runs, and is what `verify` compares the live read models with."""

    def __init__(self, store: CustomerStore, policy: Policy) -> None:
        self._store = store
        self.policy = policy

    def events(
        self,
        customer_id: str,
        *,
        through_version: int | None = None,
        known_at: datetime | None = None,
    ) -> list[InputEvent]:
        """The customer's projection inputs (those with version ≤ `through_version`, and
        recorded by `known_at`: what the engine knew then)."""
        return [e for e, _ in self._timed_events(customer_id, through_version, known_at)]

    def _timed_events(
        self, customer_id: str, through_version: int | None, known_at: datetime | None
    ) -> list[tuple[InputEvent, datetime | None]]:
        stored = self._store.stored_events(customer_id)
        if not stored or (known_at is not None and not known_by(stored[0][2], known_at)):
            raise CustomerNotFoundError(customer_id)
        return [
            (e, recorded_at(state))
            for v, topic, state in stored
            if (through_version is None or v <= through_version)
            and (known_at is None or known_by(state, known_at))
            and (e := input_event(v, topic, state)) is not None
        ]

    def group(
        self, customer_id: str, *, known_at: datetime | None = None
    ) -> dict[str, list[InputEvent]]:
        """The customer's projection inputs and those of every customer linked with it,
        or with those, by a merge (as known at `known_at`): what `projections.identity`
        folds."""
        histories = {customer_id: self.events(customer_id, known_at=known_at)}
        frontier = [customer_id]
        for _ in range(2):  # no chains: a member's survivor's members are two links away
            found = {p for c in frontier for p in partners(c, histories[c])} - set(histories)
            for partner in sorted(found):
                histories[partner] = self.events(partner, known_at=known_at)
            frontier = sorted(found)
        return histories

    def customer(
        self, customer_id: str, *, as_of: datetime, known_at: datetime | None = None
    ) -> Snapshot:
        """Tier, stage, churn as of `as_of`, as known at `known_at` (default: now), merges
        applied."""
        group = self.group(customer_id, known_at=known_at)
        return view(customer_id, group, self.policy, as_of=as_of)

    def replay(
        self, customer_id: str, *, as_of: datetime, known_at: datetime | None = None
    ) -> list[ReplayStep]:
        group = self.group(customer_id, known_at=known_at)
        return identity_replay(customer_id, group, self.policy, as_of=as_of)

    def timed_replay(
        self, customer_id: str, *, as_of: datetime, known_at: datetime | None = None
    ) -> tuple[list[ReplayStep], dict[str, Arrival]]:
        """The replay, and for each event step (by ``event_id``) when it was recorded and
        whether it arrived late: after an event that occurred later than it had been
        recorded, so it changed a past the engine had already reported on."""
        timed = self._timed_events(customer_id, None, known_at)
        steps = self.replay(customer_id, as_of=as_of, known_at=known_at)
        return steps, arrivals(timed)

    def histories(
        self,
        *,
        known_at: datetime | None = None,
        on_damaged: Callable[[str, int], None] | None = None,
    ) -> Iterator[History]:
        """Every customer's inputs, streaming the events table once in customer order
        (only events recorded by `known_at`, and only customers known by then). A damaged
        event raises `DamagedEventError`, or, with ``on_damaged``, is reported to it
        (customer id, version) and skipped."""
        current: History | None = None
        report = None
        if on_damaged is not None:
            damaged = on_damaged

            def report(customer: UUID, version: int) -> None:
                known = current is not None and current.customer == customer
                damaged(current.customer_id if known and current else str(customer), version)

        for originator, version, topic, state in self._store.scan_stored_events(on_damaged=report):
            if current is None or originator != current.customer:
                if current is not None and current.version:
                    yield current
                current = History(originator, customer_id_of(topic, state) or "", 0, [])
            if known_at is not None and not known_by(state, known_at):
                continue
            current.version = version
            event = input_event(version, topic, state)
            if event is not None:
                current.events.append(event)
        if current is not None and current.version:
            yield current

    def all_customers(
        self, *, as_of: datetime, known_at: datetime | None = None
    ) -> Iterator[Snapshot]:
        """Every customer's snapshot as of `as_of`, as known at `known_at`, merges applied."""
        for history in self.histories(known_at=known_at):
            if linked(history.events):
                yield self.customer(history.customer_id, as_of=as_of, known_at=known_at)
            else:
                yield snapshot(fold(history.customer_id, history.events, self.policy, as_of=as_of))


def recorded_at(state: dict[str, Any]) -> datetime | None:
    """When a stored event was recorded (eventsourcing's event timestamp, set on write)."""
    value = state.get("timestamp")
    return value if isinstance(value, datetime) else None


def known_by(state: dict[str, Any], known_at: datetime) -> bool:
    """Whether a stored event had been recorded by `known_at`."""
    at = recorded_at(state)
    return at is not None and at <= known_at


@dataclass(frozen=True, slots=True)
class Arrival:
    """When an event reached the store, beside when it occurred."""

    recorded_at: datetime | None
    late: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "recorded_at": None if self.recorded_at is None else self.recorded_at.isoformat(),
            "late": self.late,
        }


def arrivals(timed: list[tuple[InputEvent, datetime | None]]) -> dict[str, Arrival]:
    """Each event's arrival: late when an event that occurred after it had been recorded
    before it (events recorded in one write, at one instant, arrived together)."""
    groups: dict[datetime | None, list[InputEvent]] = {}
    for event, at in timed:
        groups.setdefault(at, []).append(event)
    result: dict[str, Arrival] = {}
    latest: datetime | None = None
    for at in sorted(groups, key=lambda a: (a is None, a or datetime.min.replace(tzinfo=UTC))):
        group = groups[at]
        for event in group:
            result[event.event_id] = Arrival(at, latest is not None and event.occurred_at < latest)
        newest = max(event.occurred_at for event in group)
        latest = newest if latest is None or newest > latest else latest
    return result


@dataclass
class History:
    """One customer's stored history as the projections see it."""

    customer: UUID
    customer_id: str
    version: int
    """The customer's latest stored version."""
    events: list[InputEvent]
