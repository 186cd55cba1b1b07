"""The ports of the projector: what it needs from the outside, defined once in the core.

`streams.projector.Projector` depends on these; `adapters` implements them (PostgreSQL
read models, the state loader over the store) and `streams.app` the change publisher;
`infra` wires them. Both layers import this one definition, since they may not import
each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from projections.model import Change, Snapshot
from projections.state import CustomerState


@dataclass(frozen=True, slots=True)
class ReadModelRow:
    """What the projector hands the read-model store for one customer.

    ``applied_version`` / ``applied_position`` say which stored events the snapshot
    includes (the store keeps the newest, see `ReadModelSink`); ``next_deadline`` is
    the instant until which tier, stage and alert stay as they are with no new event,
    so the table also serves as the durable timer list after a restart.
    """

    customer_id: str
    snapshot: Snapshot
    applied_version: int
    applied_position: int
    next_deadline: datetime | None


class Projected(NamedTuple):
    """How far a worker projected a customer: its stored read model's
    ``applied_version`` / ``applied_position`` and ``evaluated_at`` (the clock of the
    state it wrote, which a timer may have advanced past the last event). Every change
    up to there was published: a worker publishes before it writes the row."""

    version: int
    position: int
    evaluated_at: datetime | None


class StateLoader(Protocol):
    """Rebuilds a customer's state from the store, the truth (invariant 1)."""

    def load(self, customer_id: str, *, through_version: int) -> CustomerState:
        """The state folded from the customer's stored events with version ≤
        ``through_version`` (an empty state if there are none)."""
        ...

    def projected(self, customer_ids: Sequence[str]) -> Mapping[str, Projected]:
        """The stored read models of these customers (those that have one): where a
        reloaded customer resumes, so its subscribers' view goes on from there."""
        ...


class ReadModelSink(Protocol):
    """Where read models go; must keep, per customer, the row with the highest
    ``(applied_version, snapshot.evaluated_at)`` so stale or repeated writes (a
    redelivery, a zombie worker) never overwrite newer ones. Any return value (the
    PostgreSQL store returns the rows written) is ignored."""

    def upsert(self, rows: Sequence[ReadModelRow]) -> object: ...


class ChangePublisher(Protocol):
    """Where tier, lifecycle and alert changes go (the faust layer maps `Change.kind`
    to the `tier-changes`, `lifecycle-changes` and `churn-alerts` topics); returning
    means the changes are durably handed over (flushed). Any return value is ignored."""

    def publish(self, changes: Sequence[Change]) -> object: ...


@dataclass(frozen=True, slots=True)
class Group:
    """A customer's identity group as stored now (docs/identity.md): the survivor, the
    customers merged into it, their union's state, and each member's latest stored
    ``(version, position)``. An unlinked customer is a group of one."""

    survivor: str
    members: tuple[str, ...]
    state: CustomerState
    heads: Mapping[str, tuple[int, int]]

    @property
    def customers(self) -> tuple[str, ...]:
        return (self.survivor, *self.members)


class GroupLoader(Protocol):
    """Identity resolution for the projector: which customers project as one, folded."""

    def load_group(
        self, customer_id: str, *, as_of: datetime | None, through_version: int | None
    ) -> Group:
        """The group ``customer_id`` belongs to now, with every stored event of its
        members folded as of ``as_of`` (or their latest instant, link events included,
        if later). A customer linked to no one is folded through ``through_version``
        only (all if None) at the latest instant of that history, as `StateLoader.load`
        does (``as_of`` is then ignored; its ``heads`` may then be empty: the caller
        knows the version it asked for)."""
        ...
