"""From stored events to what the projections fold: the one mapping, used by the CLI's
read commands, the relay (which publishes it) and `verify`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
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

    def events(self, customer_id: str, *, through_version: int | None = None) -> list[InputEvent]:
        """The customer's projection inputs (those with version ≤ `through_version`)."""
        stored = self._store.stored_events(customer_id)
        if not stored:
            raise CustomerNotFoundError(customer_id)
        return [
            e
            for v, topic, state in stored
            if (through_version is None or v <= through_version)
            and (e := input_event(v, topic, state)) is not None
        ]

    def group(self, customer_id: str) -> dict[str, list[InputEvent]]:
        """The customer's projection inputs and those of every customer linked with it,
        or with those, by a merge: what `projections.identity` folds."""
        histories = {customer_id: self.events(customer_id)}
        frontier = [customer_id]
        for _ in range(2):  # no chains: a member's survivor's members are two links away
            found = {p for c in frontier for p in partners(c, histories[c])} - set(histories)
            for partner in sorted(found):
                histories[partner] = self.events(partner)
            frontier = sorted(found)
        return histories

    def customer(self, customer_id: str, *, as_of: datetime) -> Snapshot:
        return view(customer_id, self.group(customer_id), self.policy, as_of=as_of)

    def replay(self, customer_id: str, *, as_of: datetime) -> list[ReplayStep]:
        return identity_replay(customer_id, self.group(customer_id), self.policy, as_of=as_of)

    def histories(self) -> Iterator[History]:
        """Every customer's inputs, streaming the events table once in customer order."""
        current: History | None = None
        for originator, version, topic, state in self._store.scan_stored_events():
            if current is None or originator != current.customer:
                if current is not None:
                    yield current
                current = History(originator, customer_id_of(topic, state) or "", 0, [])
            current.version = version
            event = input_event(version, topic, state)
            if event is not None:
                current.events.append(event)
        if current is not None:
            yield current

    def all_customers(self, *, as_of: datetime) -> Iterator[Snapshot]:
        """Every customer's snapshot as of `as_of`, merges applied."""
        for history in self.histories():
            if linked(history.events):
                yield self.customer(history.customer_id, as_of=as_of)
            else:
                yield snapshot(fold(history.customer_id, history.events, self.policy, as_of=as_of))


@dataclass
class History:
    """One customer's stored history as the projections see it."""

    customer: UUID
    customer_id: str
    version: int
    """The customer's latest stored version."""
    events: list[InputEvent]
