"""The values that cross the boundary of the projections: inputs, changes, explanations.

Everything here is immutable and turns into JSON-safe primitives with ``to_dict()``
(ISO 8601 strings for instants, strings for decimals), because the CLI, the Kafka
topics and the read models all serialize them and must agree on one spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from hashlib import sha256
from typing import Any, Final, Literal, NamedTuple

from projections.vocabulary import OPS_ACTIONS, AlertState, ChurnLevel, Stage, Tier, ops_kind

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

ALERT_ACKNOWLEDGED: Final = ops_kind("acknowledged")
ALERT_SNOOZED: Final = ops_kind("snoozed")
ALERT_RESOLVED: Final = ops_kind("resolved")
OPS_KINDS: Final = frozenset(OPS_ACTIONS)

ChangeKind = Literal["tier", "lifecycle", "alert"]

CORRECTION_RULE: Final = "late_event.recomputed"
"""The first reason of a correction: a late event refolded history (`Change.change_id`)."""


def to_micros(instant: datetime) -> int:
    """Microseconds since the epoch: exact integer time, so deadlines never round."""
    return (instant - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
"""Types `json_safe` returns as they are. It looks up exact types first (these, then
`Decimal`: a read model's reasons hold ~130 decimals), since the ``isinstance`` chain
cost ~30 % of the projector's read-model writes (docs/scaling.md)."""


def json_safe(value: Any) -> Any:
    """Datetimes to ISO strings, decimals to strings, containers recursively."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Decimal:
        return str(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        return {str(key): json_safe(item) for key, item in value.items()}
    if kind is list or isinstance(value, tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal) else value


@dataclass(frozen=True, slots=True)
class InputEvent:
    """One stored event as the projections see it, built by the adapters.

    ``event_id`` identifies the event for deduplication and explanations and must be
    stable across redeliveries; ``version`` is only informative (arrival order is
    deliberately never used: the result depends on the set of events, ordered by
    ``(occurred_at, event_id)``).
    """

    event_id: str
    version: int
    kind: str
    occurred_at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "version": self.version,
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "amount": None if self.amount is None else str(self.amount),
            "currency": self.currency,
            "facts": json_safe(self.facts),
        }


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a value is what it is: the rule, what it looked at, and what it compared with.

    ``points`` is set for churn signals (their contribution to the score).
    """

    rule: str
    message: str
    policy_version: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    event_ids: tuple[str, ...] = ()
    points: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "message": self.message,
            "policy_version": self.policy_version,
            "inputs": json_safe(self.inputs),
            "thresholds": json_safe(self.thresholds),
            "event_ids": list(self.event_ids),
            "points": None if self.points is None else str(self.points),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """A tier, lifecycle or alert transition, published to the change topics.

    ``effective_at`` is when it happened in event time (for time-driven changes, the
    computed deadline, never the moment a timer noticed it), so live and replay agree.
    """

    customer_id: str
    kind: ChangeKind
    from_value: str
    to_value: str
    effective_at: datetime
    reasons: tuple[Reason, ...]
    policy_version: str
    event_ids: tuple[str, ...] = ()
    alert_id: str | None = None

    @property
    def change_id(self) -> str:
        """What consumers deduplicate on: the same transition has the same id whether it
        was published live, again after a redelivery, or re-announced from a replay
        after a broker wipe. It names the landing, not the path: customer, kind, new
        value, effective instant, and for alerts the alert id (docs/topics.md).

        A correction (a late event's refold, first reason `CORRECTION_RULE`) also names
        the late event: it may land where an earlier change did (the subscriber's view
        having moved away since), and a subscriber would drop it as already seen."""
        parts = [
            self.customer_id,
            self.kind,
            self.to_value,
            str(to_micros(self.effective_at)),
            self.alert_id or "",
        ]
        if self.reasons and self.reasons[0].rule == CORRECTION_RULE:
            parts.extend(("correction", *self.reasons[0].event_ids))
        key = "\x00".join(parts)
        return f"chg-{sha256(key.encode()).hexdigest()[:24]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "change_id": self.change_id,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "from_value": self.from_value,
            "to_value": self.to_value,
            "effective_at": self.effective_at.isoformat(),
            "reasons": [reason.to_dict() for reason in self.reasons],
            "policy_version": self.policy_version,
            "event_ids": list(self.event_ids),
            "alert_id": self.alert_id,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The flat, current view of one customer at ``evaluated_at``: what read models store."""

    customer_id: str
    tier: Tier
    lifecycle_stage: Stage
    stage_entered_at: datetime | None
    stage_entries: Mapping[Stage, int]
    stage_days: Mapping[Stage, Decimal]
    churn_score: Decimal
    """Percent chance of no purchase or renewal within the policy's horizon, one decimal."""
    churn_level: ChurnLevel
    alert_state: AlertState
    alert_id: str | None
    alert_open: bool
    last_purchase_at: datetime | None
    net_revenue_base: Decimal
    base_currency: str
    purchase_count: int
    window_purchase_count: int
    reasons: tuple[Reason, ...]
    """Why tier, stage and alert are what they are: the reasons of their latest changes
    (an alert's include the churn signals as they were when it changed)."""
    churn_signals: tuple[Reason, ...]
    """The churn score explained at ``evaluated_at``: the typical customer's score, then
    each signal in force now with its points (they add up to ``churn_score``)."""
    policy_version: str
    evaluated_at: datetime | None
    event_count: int
    merged_into: str | None = None
    """The survivor this customer is merged into (docs/identity.md): its values are then
    the survivor's, and the pair's one alert is the survivor's."""

    def to_dict(self, reason: Callable[[Reason], Any] = Reason.to_dict) -> dict[str, Any]:
        """The JSON object of a read model. ``reason`` converts each reason (a writer
        that hands the `Reason` dataclasses to orjson as they are passes ``lambda r: r``:
        adapters.readmodels.snapshot_json)."""
        merged = {} if self.merged_into is None else {"merged_into": self.merged_into}
        return merged | {
            "customer_id": self.customer_id,
            "tier": self.tier,
            "lifecycle_stage": self.lifecycle_stage,
            "stage_entered_at": json_safe(self.stage_entered_at),
            "stage_entries": dict(self.stage_entries),
            "stage_days": json_safe(self.stage_days),
            "churn_score": float(self.churn_score),
            "churn_level": self.churn_level,
            "alert_state": self.alert_state,
            "alert_id": self.alert_id,
            "alert_open": self.alert_open,
            "last_purchase_at": json_safe(self.last_purchase_at),
            "net_revenue_base": str(self.net_revenue_base),
            "base_currency": self.base_currency,
            "purchase_count": self.purchase_count,
            "window_purchase_count": self.window_purchase_count,
            "reasons": [reason(r) for r in self.reasons],
            "churn_signals": [reason(r) for r in self.churn_signals],
            "policy_version": self.policy_version,
            "evaluated_at": json_safe(self.evaluated_at),
            "event_count": self.event_count,
        }


class StepSummary(NamedTuple):
    """The visible state after one replay step: what an audit reads row by row.

    The same values (and ``to_dict`` keys) as the fields of :class:`Snapshot` it keeps,
    without the per-step explanations: every change of a step carries its own reasons,
    and :func:`projections.snapshot` explains the final state in full. Building a full
    snapshot at each step cost more than the fold itself. A named tuple (immutable, like
    the dataclasses here) because one is built per step and constructs 4x faster.
    """

    tier: Tier
    lifecycle_stage: Stage
    stage_entered_at: datetime | None
    churn_score: Decimal
    churn_level: ChurnLevel
    alert_state: AlertState
    alert_id: str | None
    alert_open: bool
    net_revenue_base: Decimal
    purchase_count: int
    window_purchase_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "lifecycle_stage": self.lifecycle_stage,
            "stage_entered_at": json_safe(self.stage_entered_at),
            "churn_score": float(self.churn_score),
            "churn_level": self.churn_level,
            "alert_state": self.alert_state,
            "alert_id": self.alert_id,
            "alert_open": self.alert_open,
            "net_revenue_base": str(self.net_revenue_base),
            "purchase_count": self.purchase_count,
            "window_purchase_count": self.window_purchase_count,
        }


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One step of an audited replay: an event (or a deadline), the state after it, the
    changes it caused. ``event_id`` is None for a time-driven step."""

    at: datetime
    event_id: str | None
    kind: str
    summary: StepSummary
    changes: tuple[Change, ...]
    note: Reason | None = None
    """Why the step happened when no change says it: a merge or unmerge (who, why)."""

    def to_dict(self) -> dict[str, Any]:
        note = {} if self.note is None else {"reason": self.note.to_dict()}
        return {
            "at": self.at.isoformat(),
            "event_id": self.event_id,
            "kind": self.kind,
            "summary": self.summary.to_dict(),
            "changes": [change.to_dict() for change in self.changes],
        } | note
