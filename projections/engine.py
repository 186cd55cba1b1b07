"""The fold: one customer's events, in event time, into tier, lifecycle stage and alert.

The model is a deterministic process over event time. Events are ordered by
``(occurred_at, event_id)`` (never by arrival), and between events the state changes
only at *deadlines* it can compute itself (a window expiring, a grace period ending,
inactivity crossing a threshold, a snooze ending, an SLA breach). At an instant,
deadlines are processed before events. So the state at ``t`` is a function of the set
of events up to ``t`` and of ``t``: replay equals live, whatever the arrival order and
however a timer splits the way to ``t``.

Cost model: the common in-order event is folded incrementally in O(1) amortized (small
deques of what is still inside a window, running sums, cached next deadline). An event
older than the last one folded (a late arrival) triggers a recompute from the sorted
log the state keeps. The state is a mutable object owned by its caller: ``apply`` and
``advance`` update it in place and return it (copying a growing log per event would
make folding quadratic); call :meth:`CustomerState.copy` to keep an older version.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from hashlib import sha256
from operator import itemgetter
from typing import Any, Final

from domain.interactions import Kind
from projections import churn as signals
from projections.model import (
    ALERT_ACKNOWLEDGED,
    ALERT_RESOLVED,
    ALERT_SNOOZED,
    OPS_KINDS,
    Change,
    ChangeKind,
    InputEvent,
    Reason,
    ReplayStep,
    Snapshot,
    StepSummary,
    from_micros,
    to_micros,
)
from projections.policy import MONEY_CONTEXT, SCALE, Policy

FAR: Final = 1 << 62
"""No deadline: later than any representable instant."""

STAGES: Final = ("prospect", "new", "active", "loyal", "at_risk", "churned", "reactivated")
_ENGAGED: Final = frozenset({"new", "active", "loyal", "reactivated"})
OPEN_ALERT_STATES: Final = frozenset({"raised", "escalated", "acknowledged", "snoozed"})

_PURCHASE, _REFUND = Kind.PURCHASE.value, Kind.REFUND.value
_SUB_STARTED, _SUB_RENEWED = Kind.SUBSCRIPTION_STARTED.value, Kind.SUBSCRIPTION_RENEWED.value
_SUB_CANCELLED = Kind.SUBSCRIPTION_CANCELLED.value
_RELEVANT: Final = frozenset(
    {
        _PURCHASE,
        _REFUND,
        _SUB_STARTED,
        _SUB_RENEWED,
        _SUB_CANCELLED,
        Kind.PAYMENT_FAILED.value,
        Kind.SUPPORT_TICKET_OPENED.value,
        Kind.SUPPORT_TICKET_RESOLVED.value,
        Kind.COMPLAINT.value,
        Kind.SURVEY_RESPONSE.value,
        ALERT_ACKNOWLEDGED,
        ALERT_SNOOZED,
        ALERT_RESOLVED,
    }
)
"""Kinds that can change a projection; the others (visits, logins, emails, profile)
only move the clock, which keeps the most frequent events the cheapest."""

_TIER_KINDS: Final = frozenset({_PURCHASE, _REFUND, _SUB_STARTED, _SUB_RENEWED})
"""Kinds that can add to the tier window."""
_LIFECYCLE_KINDS: Final = _TIER_KINDS | {_SUB_CANCELLED}
"""Kinds that can change a lifecycle input (purchases, subscriptions, last commerce)."""

_MAX_STEPS_PER_INSTANT: Final = 8
_LOG_SLOTS: Final = frozenset({"events", "keys"})


class CustomerState:
    """Everything the fold needs for one customer; mutable, owned by one caller."""

    __slots__ = (
        "alert_armed",
        "alert_id",
        "alert_open",
        "alert_reasons",
        "alert_seq",
        "alert_severity",
        "alert_since",
        "alert_status",
        "allowance",
        "below_since",
        "calm_until",
        "cancel_id",
        "cancel_risk",
        "cancel_until",
        "clock",
        "complaint_units",
        "complaints",
        "cross_at",
        "cross_target",
        "customer_id",
        "emit",
        "events",
        "ever_subscribed",
        "first_purchase_us",
        "fx_excluded",
        "fx_fallbacks",
        "interval",
        "keys",
        "last_commerce_id",
        "last_commerce_us",
        "last_purchase_id",
        "last_purchase_us",
        "mark",
        "other_base",
        "payments",
        "policy",
        "prior",
        "prior_sum",
        "purchase_count",
        "react_base",
        "recent",
        "recent_sum",
        "renewal_count",
        "seen",
        "snooze_until",
        "stage",
        "stage_entries",
        "stage_reasons",
        "stage_since",
        "stage_us",
        "subs",
        "survey",
        "ticket_dues",
        "ticket_memo",
        "ticket_rev",
        "tickets",
        "tier",
        "tier_reasons",
        "tier_since",
        "trend",
        "wake",
        "wake_fixed",
        "win",
        "win_purchases",
        "win_revenue",
    )

    def __init__(self, customer_id: str, policy: Policy) -> None:  # noqa: PLR0915 -- one assignment per field, grouped by projection
        self.customer_id = customer_id
        self.policy = policy
        self.clock: int | None = None
        self.emit = True
        """Build the changes (False while folding for nobody: fold, a late refold)."""
        self.events: list[InputEvent] = []
        self.keys: list[tuple[int, str]] = []
        self.seen: set[str] = set()
        self.mark: CustomerState | None = None
        """The state as of its last event, kept when `advance` moves the clock past it
        (a copy sharing the event log). An event after the last one but before the
        clock — the live case: a timer advanced the customer to "now", then an event
        stamped a little earlier arrives — refolds from here, not from the first event."""
        self.wake = FAR
        self.wake_fixed = FAR
        """The earliest planned instant from the sources that are not windows (tickets,
        subscriptions, grace, stage, snooze), as of the last full evaluation."""
        self.cross_target: int | None = None
        self.calm_until = 0
        """The score crossing is solved up to here (cache, reset by every evaluation)."""
        self.cross_at = FAR
        """The solved crossing instant (FAR: none up to ``calm_until``)."""
        # purchases and cadence
        self.purchase_count = 0
        self.first_purchase_us = 0
        self.last_purchase_us = 0
        self.last_purchase_id = ""
        self.renewal_count = 0
        self.last_commerce_us: int | None = None
        self.last_commerce_id = ""
        self.ever_subscribed = False
        self.subs: dict[str, int] = {}
        self.cancel_risk = False
        self.interval = (0, 1)
        """Cached :func:`signals.expected_interval` (set by :func:`_refresh_cadence`)."""
        self.allowance = (0, 0)
        """Cached :func:`_allowances`: (at risk after, churned after) in microseconds."""
        _refresh_cadence(self)
        # windows: (expiry_us, ...) in time order
        self.win: deque[tuple[int, Decimal, int, str]] = deque()
        self.win_revenue = Decimal(0)
        self.win_purchases = 0
        self.fx_excluded: dict[str, int] = {}
        self.fx_fallbacks = 0
        self.recent: deque[tuple[int, Decimal]] = deque()
        self.recent_sum = Decimal(0)
        self.prior: deque[tuple[int, Decimal]] = deque()
        self.prior_sum = Decimal(0)
        self.complaints: deque[tuple[int, int, str]] = deque()
        self.complaint_units = 0
        self.payments: deque[tuple[int, str]] = deque()
        self.survey: tuple[int, int, str] | None = None
        self.cancel_until: int | None = None
        self.cancel_id = ""
        self.tickets: dict[str, tuple[int, str, str]] = {}
        self.ticket_dues: list[int] = []
        """The SLA instants of ``tickets``, sorted (breaches counted by bisection)."""
        self.ticket_rev = 0
        """Bumped at every change of ``tickets`` (keys ``ticket_memo``)."""
        self.ticket_memo: tuple[tuple[int, int], Reason | None] | None = None
        """The last tickets-past-SLA reason built, by (ticket_rev, breached count)."""
        self.trend = -1
        """Cached spend-trend points (-1: to compute); reset when either sum changes."""
        self.other_base = -1
        """Cached points of the signals but inactivity and tickets (-1: to compute)."""
        # tier
        self.tier = "none"
        self.tier_since: int | None = None
        self.below_since: int | None = None
        self.tier_reasons: tuple[Reason, ...] = ()
        # lifecycle
        self.stage = "prospect"
        self.stage_since: int | None = None
        self.stage_us: dict[str, int] = {}
        self.stage_entries: dict[str, int] = {"prospect": 1}
        self.react_base = 0
        self.stage_reasons: tuple[Reason, ...] = ()
        # alert
        self.alert_seq = 0
        self.alert_id: str | None = None
        self.alert_open = False
        self.alert_status = "none"
        self.alert_severity = "warning"
        self.alert_since: int | None = None
        self.snooze_until: int | None = None
        self.alert_armed = True
        self.alert_reasons: tuple[Reason, ...] = ()

    def copy(self, *, share_log: bool = False) -> CustomerState:
        """An independent copy; ``share_log`` shares the event log (for read-only use)."""
        other = CustomerState.__new__(CustomerState)
        for name in CustomerState.__slots__:
            value = getattr(self, name)
            if isinstance(value, deque | dict | set):
                value = value.copy()
            elif isinstance(value, list) and not (share_log and name in _LOG_SLOTS):
                value = list(value)
            setattr(other, name, value)
        return other

    @property
    def last_event_key(self) -> tuple[int, str] | None:
        return self.keys[-1] if self.keys else None


# --- public API ---------------------------------------------------------------------


def initial_state(customer_id: str, policy: Policy) -> CustomerState:
    return CustomerState(customer_id, policy)


def apply(state: CustomerState, event: InputEvent) -> tuple[CustomerState, list[Change]]:
    """Fold one event; returns the (same, updated) state and the changes it caused.

    Time-driven changes due before the event come first, at their own instants. A
    duplicate event id changes nothing. A late event recomputes from the sorted log and
    reports the differences it made, as corrections.
    """
    if event.event_id in state.seen:
        return state, []
    changes: list[Change] = []
    at = to_micros(event.occurred_at)
    key = (at, event.event_id)
    last = state.last_event_key
    in_order = state.clock is None or (at >= state.clock and (last is None or key > last))
    if in_order:
        _fold_event(state, event, at, key, changes.extend)
        return state, changes
    mark = state.mark
    if mark is not None and (last is None or key > last):
        return state, _refold_from_mark(state, mark, event, key)
    return state, _recompute_with(state, event, key)


def advance(state: CustomerState, t: datetime) -> tuple[CustomerState, list[Change]]:
    """Move the state to ``t``; every change is stamped with its own deadline, not ``t``."""
    changes: list[Change] = []
    target = to_micros(t)
    if state.mark is None and state.clock is not None and target > state.clock:
        state.mark = _mark(state)
    _advance(state, target, lambda _at, found: changes.extend(found))
    return state, changes


def next_deadline(state: CustomerState) -> datetime | None:
    """The next instant at which a tier, stage or alert change happens with no new event.

    Internal deadlines that change nothing visible (a window edge that does not move
    the tier) are skipped, by simulating on a copy that shares the event log.
    """
    probe = state.copy(share_log=True)
    for _ in range(10_000):
        instant = _next_step(probe, FAR - 1)
        if instant is None:
            return None
        found: list[Change] = []
        _advance(probe, instant, _collect_into(found))
        if found:
            return from_micros(instant)
    return from_micros(probe.wake) if probe.wake < FAR else None


def fold(
    customer_id: str, events: Iterable[InputEvent], policy: Policy, *, as_of: datetime
) -> CustomerState:
    """The state at ``as_of`` from a set of events (later ones are ignored), in one pass."""
    state = CustomerState(customer_id, policy)
    limit = to_micros(as_of)
    state.emit = False  # nobody reads the changes: do not build them
    for event, at, key in _ordered(events, limit):
        _fold_event(state, event, at, key, _discard)
    _advance(state, limit, _ignore_step)
    state.emit = True
    return state


def replay(
    customer_id: str, events: Iterable[InputEvent], policy: Policy, *, as_of: datetime
) -> list[ReplayStep]:
    """The audited fold: each event and each time-driven change, in time order, with the
    visible state after it (:class:`StepSummary`, equal to the same fields of a
    :func:`snapshot` taken there)."""
    state = CustomerState(customer_id, policy)
    limit = to_micros(as_of)
    steps: list[ReplayStep] = []
    summarize = _summarizer(state)

    def on_time_step(at: int, changes: list[Change]) -> None:
        steps.append(ReplayStep(from_micros(at), None, "deadline", summarize(), tuple(changes)))

    for event, at, key in _ordered(events, limit):
        _advance(state, at, on_time_step)
        found: list[Change] = []
        _fold_event(state, event, at, key, found.extend)
        steps.append(
            ReplayStep(event.occurred_at, event.event_id, event.kind, summarize(), tuple(found))
        )
    _advance(state, limit, on_time_step)
    return steps


def _summarizer(state: CustomerState) -> Callable[[], StepSummary]:
    """The step summaries of one replay (the stage entry instant converted once)."""
    churn = state.policy.churn
    entered: list[Any] = [None, None]  # stage_since, as a datetime

    def summarize() -> StepSummary:
        t = state.clock
        score = 0
        if t is not None:
            score = signals.score_of(
                signals.other_centi(state, t) + signals.inactivity_centi(state, t)
            )
        since = state.stage_since
        if since != entered[0]:
            entered[:] = [since, None if since is None else from_micros(since)]
        return StepSummary(
            state.tier,
            state.stage,
            entered[1],
            score,
            signals.level_of(score, churn),
            state.alert_status,
            state.alert_id,
            state.alert_open,
            state.win_revenue,
            state.purchase_count,
            state.win_purchases,
        )

    return summarize


def snapshot(state: CustomerState) -> Snapshot:
    """The flat view at the state's clock (the churn score is evaluated at that instant)."""
    t = state.clock
    score = 0
    churn_reasons: tuple[Reason, ...] = ()
    if t is not None:
        score = signals.score_of(signals.other_centi(state, t) + signals.inactivity_centi(state, t))
        churn_reasons = signals.signal_reasons(state, t)
    durations = dict(state.stage_us)
    if state.stage_since is not None and t is not None:
        durations[state.stage] = durations.get(state.stage, 0) + t - state.stage_since
    return Snapshot(
        customer_id=state.customer_id,
        tier=state.tier,
        lifecycle_stage=state.stage,
        stage_entered_at=None if state.stage_since is None else from_micros(state.stage_since),
        stage_entries=dict(state.stage_entries),
        stage_days={stage: signals.days(us) for stage, us in sorted(durations.items())},
        churn_score=score,
        churn_level=signals.level_of(score, state.policy.churn),
        alert_state=state.alert_status,
        alert_id=state.alert_id,
        alert_open=state.alert_open,
        last_purchase_at=from_micros(state.last_purchase_us) if state.purchase_count else None,
        net_revenue_base=state.win_revenue,
        base_currency=state.policy.base_currency,
        purchase_count=state.purchase_count,
        window_purchase_count=state.win_purchases,
        reasons=state.tier_reasons + state.stage_reasons + state.alert_reasons + churn_reasons,
        policy_version=state.policy.version,
        evaluated_at=None if t is None else from_micros(t),
        event_count=len(state.events),
    )


def alert_id_for(customer_id: str, sequence: int) -> str:
    """Deterministic: the n-th alert of a customer has the same id live and in replay."""
    digest = sha256(f"{customer_id}\x00alert\x00{sequence}".encode()).hexdigest()
    return f"alert-{digest[:24]}"


# --- the process ------------------------------------------------------------------------

_Sink = Callable[[list[Change]], Any]
_StepSink = Callable[[int, list[Change]], Any]


def _discard(_changes: list[Change]) -> None:
    return None


def _ignore_step(_at: int, _changes: list[Change]) -> None:
    return None


def _step_sink(sink: _Sink) -> _StepSink:
    def on_step(_at: int, changes: list[Change]) -> None:
        sink(changes)

    return on_step


def _collect_into(found: list[Change]) -> _StepSink:
    def collect(_at: int, changes: list[Change]) -> None:
        found.extend(changes)

    return collect


def _ordered(
    events: Iterable[InputEvent], limit: int
) -> list[tuple[InputEvent, int, tuple[int, str]]]:
    keyed: dict[str, tuple[InputEvent, int, tuple[int, str]]] = {}
    for event in events:
        at = to_micros(event.occurred_at)
        if at > limit:
            continue
        key = (at, event.event_id)
        known = keyed.get(event.event_id)
        if known is None or key < known[2]:
            keyed[event.event_id] = (event, at, key)
    return sorted(keyed.values(), key=itemgetter(2))


def _advance(state: CustomerState, t: int, on_step: _StepSink) -> None:
    """Process every deadline up to and including ``t``, then set the clock to ``t``."""
    while (at := _next_step(state, t)) is not None:
        state.clock = at
        changes: list[Change] = []
        if at == state.wake and at < state.wake_fixed:
            _window_edge(state, at, changes)
        else:
            _evaluate(state, at, None, changes)
        if changes:
            on_step(at, changes)
    if state.clock is None or t > state.clock:
        state.clock = t


def _next_step(state: CustomerState, t: int) -> int | None:
    """The next deadline not after ``t``: a planned one, or the score crossing a level.

    The crossing is looked for up to ``min(wake, t)``; ``calm_until`` and ``cross_at``
    keep what was found (none up to ``calm_until``, or the first crossing, which is
    then the first one up to ``wake``) until the next evaluation resets them.
    """
    wake = state.wake
    target = state.cross_target
    if target is not None:
        clock = state.clock
        horizon = min(wake, t)
        if clock is not None and horizon > clock and horizon > state.calm_until:
            found = signals.crossing(state, clock, horizon, target)
            if found is None:
                state.calm_until = horizon
            else:
                state.cross_at, state.calm_until = found, wake
        crossing = state.cross_at
        if crossing < wake:
            return crossing if crossing <= t else None
    return wake if wake <= t else None


def _fold_event(
    state: CustomerState, event: InputEvent, at: int, key: tuple[int, str], sink: _Sink
) -> None:
    state.mark = None  # the log grows: a mark would share it, and be stale
    if state.wake <= at or state.cross_target is not None:
        _advance(state, at, _ignore_step if sink is _discard else _step_sink(sink))
    state.clock = at
    state.seen.add(event.event_id)
    state.events.append(event)
    state.keys.append(key)
    if event.kind not in _RELEVANT:
        return
    changes: list[Change] = []
    _record(state, event, at)
    _evaluate(state, at, event, changes)
    if changes:
        sink(changes)


def _recompute_with(state: CustomerState, event: InputEvent, key: tuple[int, str]) -> list[Change]:
    """A late event: refold the sorted log (with it) and report what differs, as corrections."""
    before = _visible(state)
    target = max(state.clock or key[0], key[0])
    events = list(state.events)
    keys = list(state.keys)
    insort(keys, key)
    position = keys.index(key)
    events.insert(position, event)
    fresh = CustomerState(state.customer_id, state.policy)
    fresh.emit = False
    for item, item_key in zip(events, keys, strict=True):
        _fold_event(fresh, item, item_key[0], item_key, _discard)
    _advance(fresh, target, _ignore_step)
    fresh.emit = True
    for name in CustomerState.__slots__:
        setattr(state, name, getattr(fresh, name))
    return _corrections(state, before, event)


def _mark(state: CustomerState) -> CustomerState:
    mark = state.copy(share_log=True)
    mark.mark = None
    return mark


def _refold_from_mark(
    state: CustomerState, mark: CustomerState, event: InputEvent, key: tuple[int, str]
) -> list[Change]:
    """An event after the last one, before the clock: what `_recompute_with` computes,
    starting from the state as of the last event instead of from nothing."""
    before = _visible(state)
    target = state.clock or key[0]
    for name in CustomerState.__slots__:
        setattr(state, name, getattr(mark, name))
    state.emit = False
    _fold_event(state, event, key[0], key, _discard)
    state.mark = _mark(state)
    _advance(state, target, _ignore_step)
    state.emit = True
    return _corrections(state, before, event)


def _visible(state: CustomerState) -> tuple[str, str, str, str | None]:
    return state.tier, state.stage, state.alert_status, state.alert_id


def _corrections(
    state: CustomerState, before: tuple[str, str, str, str | None], late: InputEvent
) -> list[Change]:
    after = _visible(state)
    note = Reason(
        rule="late_event.recomputed",
        message="an event older than the last one folded arrived; history was refolded",
        policy_version=state.policy.version,
        inputs={"occurred_at": late.occurred_at},
        event_ids=(late.event_id,),
    )
    changes: list[Change] = []
    clock = state.clock or 0
    if before[0] != after[0]:
        changes.append(
            _change(state, "tier", before[0], after[0], state.tier_since or clock,
                    (note, *state.tier_reasons))
        )  # fmt: skip
        changes[-1] = _with_ids(changes[-1], late.event_id)
    if before[1] != after[1]:
        changes.append(
            _change(state, "lifecycle", before[1], after[1], state.stage_since or clock,
                    (note, *state.stage_reasons))
        )  # fmt: skip
        changes[-1] = _with_ids(changes[-1], late.event_id)
    if before[2:] != after[2:]:
        changes.append(
            _change(state, "alert", before[2], after[2], state.alert_since or clock,
                    (note, *state.alert_reasons), alert_id=after[3] or before[3])
        )  # fmt: skip
        changes[-1] = _with_ids(changes[-1], late.event_id)
    return changes


def _with_ids(change: Change, event_id: str) -> Change:
    ids = change.event_ids if event_id in change.event_ids else (*change.event_ids, event_id)
    return Change(
        change.customer_id,
        change.kind,
        change.from_value,
        change.to_value,
        change.effective_at,
        change.reasons,
        change.policy_version,
        ids,
        change.alert_id,
    )


def _change(  # noqa: PLR0917
    state: CustomerState,
    kind: ChangeKind,
    old: str,
    new: str,
    at: int,
    reasons: tuple[Reason, ...],
    *,
    alert_id: str | None = None,
) -> Change:
    ids = dict.fromkeys(i for reason in reasons for i in reason.event_ids if i)
    return Change(
        customer_id=state.customer_id,
        kind=kind,
        from_value=old,
        to_value=new,
        effective_at=from_micros(at),
        reasons=reasons,
        policy_version=state.policy.version,
        event_ids=tuple(ids),
        alert_id=alert_id,
    )


# --- recording facts ------------------------------------------------------------------------


def _record(state: CustomerState, event: InputEvent, at: int) -> None:  # noqa: PLR0912, PLR0915 -- one branch per event kind reads best
    """Update the running statistics with one event (in event-time order)."""
    kind = event.kind
    policy = state.policy
    facts = event.facts
    state.other_base = -1
    if kind in (_PURCHASE, _REFUND, _SUB_STARTED, _SUB_RENEWED):
        amount = _base_amount(state, event, at)
        if kind == _REFUND:
            amount = -amount
        purchase = 1 if kind == _PURCHASE else 0
        if amount or purchase:
            state.win.append((at + policy.tier.window_us, amount, purchase, event.event_id))
            state.win_revenue = MONEY_CONTEXT.add(state.win_revenue, amount)
            state.win_purchases += purchase
        if amount:
            state.recent.append((at + policy.churn.trend_window_us, amount))
            state.recent_sum = MONEY_CONTEXT.add(state.recent_sum, amount)
            state.trend = -1
        if kind == _REFUND:
            return
        if purchase:
            if state.purchase_count == 0:
                state.first_purchase_us = at
            state.purchase_count += 1
            state.last_purchase_us = at
            state.last_purchase_id = event.event_id
            _refresh_cadence(state)
        else:
            state.subs[str(facts.get("subscription_id", ""))] = at
            state.ever_subscribed = True
            state.cancel_until = None
            if kind == _SUB_RENEWED:
                state.renewal_count += 1
        state.last_commerce_us = at
        state.last_commerce_id = event.event_id
        state.cancel_risk = False
    elif kind == _SUB_CANCELLED:
        state.subs.pop(str(facts.get("subscription_id", "")), None)
        state.cancel_until = at + policy.churn.cancel_window_us
        state.cancel_id = event.event_id
        if not state.subs:
            state.cancel_risk = True
    elif kind == Kind.PAYMENT_FAILED:
        state.payments.append((at + policy.churn.payment_window_us, event.event_id))
    elif kind == Kind.SUPPORT_TICKET_OPENED:
        priority = str(facts.get("priority") or "normal")
        sla = policy.churn.ticket_sla_us.get(priority, policy.churn.ticket_sla_us["normal"])
        ticket_id = str(facts.get("ticket_id", event.event_id))
        _forget_ticket(state, state.tickets.get(ticket_id))
        state.tickets[ticket_id] = (at + sla, priority, event.event_id)
        insort(state.ticket_dues, at + sla)
        state.ticket_rev += 1
    elif kind == Kind.SUPPORT_TICKET_RESOLVED:
        _forget_ticket(state, state.tickets.pop(str(facts.get("ticket_id", "")), None))
        state.ticket_rev += 1
    elif kind == Kind.COMPLAINT:
        units = policy.churn.complaint_high_factor if facts.get("severity") == "high" else 1
        state.complaints.append((at + policy.churn.complaint_window_us, units, event.event_id))
        state.complaint_units += units
    elif kind == Kind.SURVEY_RESPONSE:
        score = facts.get("score")
        if isinstance(score, int) and not isinstance(score, bool):
            state.survey = (at + policy.churn.nps_window_us, score, event.event_id)


def _forget_ticket(state: CustomerState, ticket: tuple[int, str, str] | None) -> None:
    if ticket is not None:
        dues = state.ticket_dues
        del dues[bisect_left(dues, ticket[0])]


def _base_amount(state: CustomerState, event: InputEvent, at: int) -> Decimal:
    """The event's amount in the base currency; 0 (and noted) when it cannot be converted."""
    amount, currency = event.amount, event.currency
    if amount is None or currency is None:
        return Decimal(0)
    policy = state.policy
    if currency == policy.base_currency:
        return amount
    days = policy.fx_days.get(currency)
    if not days:
        state.fx_excluded[currency] = state.fx_excluded.get(currency, 0) + 1
        return Decimal(0)
    index = bisect_right(days, at) - 1  # as Policy.convert, without its explanation
    if index < 0:
        index = 0
        state.fx_fallbacks += 1
    return MONEY_CONTEXT.multiply(amount, policy.fx[currency][index].rate)


def _prune(state: CustomerState, t: int) -> None:
    """Drop what has left its window by ``t`` (an item expiring at ``t`` no longer counts)."""
    _prune_windows(state, t)
    subs = state.subs
    if subs:
        lapse = state.policy.lifecycle.subscription_lapse_us
        if min(subs.values()) + lapse <= t:
            for sub, since in list(subs.items()):
                if since + lapse <= t:
                    del subs[sub]


_TIER_MOVED: Final = 1
_SCORE_MOVED: Final = 2


def _prune_windows(state: CustomerState, t: int) -> int:
    """The windowed part of :func:`_prune`; says what moved (``_TIER_MOVED | _SCORE_MOVED``)."""
    moved = 0
    win = state.win
    if win and win[0][0] <= t:
        moved = _TIER_MOVED
        revenue, purchases = state.win_revenue, state.win_purchases
        while win and win[0][0] <= t:
            _, amount, purchase, _ = win.popleft()
            revenue = MONEY_CONTEXT.subtract(revenue, amount)
            purchases -= purchase
        state.win_revenue, state.win_purchases = revenue, purchases
    recent, prior = state.recent, state.prior
    if (recent and recent[0][0] <= t) or (prior and prior[0][0] <= t):
        moved |= _prune_trend(state, t)
    complaints = state.complaints
    if complaints and complaints[0][0] <= t:
        moved |= _SCORE_MOVED
        while complaints and complaints[0][0] <= t:
            state.complaint_units -= complaints.popleft()[1]
    payments = state.payments
    if payments and payments[0][0] <= t:
        moved |= _SCORE_MOVED
        while payments and payments[0][0] <= t:
            payments.popleft()
    if state.survey is not None and state.survey[0] <= t:
        moved |= _SCORE_MOVED
        state.survey = None
    if state.cancel_until is not None and state.cancel_until <= t:
        moved |= _SCORE_MOVED
        state.cancel_until = None
    if moved & _SCORE_MOVED:
        state.other_base = -1
    return moved


def _prune_trend(state: CustomerState, t: int) -> int:
    """Move spend from the recent to the prior half-year window and drop what left it;
    ``_SCORE_MOVED`` only if the trend points changed."""
    moved = 0
    recent, prior = state.recent, state.prior
    before = state.trend
    state.trend = -1
    churn = state.policy.churn
    window = churn.trend_window_us
    while recent and recent[0][0] <= t:
        start, amount = recent.popleft()
        state.recent_sum = MONEY_CONTEXT.subtract(state.recent_sum, amount)
        prior.append((start + window, amount))
        state.prior_sum = MONEY_CONTEXT.add(state.prior_sum, amount)
    while prior and prior[0][0] <= t:
        _, amount = prior.popleft()
        state.prior_sum = MONEY_CONTEXT.subtract(state.prior_sum, amount)
    if before < 0 or signals.trend_centi(state, churn) != before:
        moved |= _SCORE_MOVED  # the sums moved, but the score only if the points did
    return moved


# --- evaluation -------------------------------------------------------------------------


def _evaluate(
    state: CustomerState, t: int, trigger: InputEvent | None, changes: list[Change]
) -> None:
    """Bring tier, stage and alert up to date at ``t``, then compute the next deadline.

    For an event (``trigger``), every deadline up to ``t`` has just been processed and
    left tier and stage at a fixed point, so nothing is due to leave a window and only
    what the event recorded can move them: the tier step runs for the kinds that feed
    the tier window, the lifecycle step for commerce and cancellations.
    """
    if trigger is None:
        _prune(state, t)
        _evaluate_tier(state, t, trigger, changes)
        _evaluate_lifecycle(state, t, trigger, changes)
    else:
        kind = trigger.kind
        if kind in _TIER_KINDS:
            _evaluate_tier(state, t, trigger, changes)
        if kind in _LIFECYCLE_KINDS:
            _evaluate_lifecycle(state, t, trigger, changes)
        if kind in OPS_KINDS:
            _ops_action(state, t, trigger, changes)
    _evaluate_alert(state, t, trigger, changes)
    state.wake = _next_wake(state, t)
    state.calm_until = t
    state.cross_at = FAR


def _trigger_ids(trigger: InputEvent | None, *more: str) -> tuple[str, ...]:
    ids = [] if trigger is None else [trigger.event_id]
    ids.extend(i for i in more if i and i not in ids)
    return tuple(ids)


# tier


def _qualified_tier(state: CustomerState) -> str:
    for level in state.policy.tier.levels:
        if state.win_revenue >= level.min_revenue and state.win_purchases >= level.min_purchases:
            return level.name
    return "none"


def _rank(state: CustomerState, name: str) -> int:
    levels = state.policy.tier.levels
    for index, level in enumerate(levels):
        if level.name == name:
            return len(levels) - index
    return 0


def _holds(state: CustomerState, name: str) -> bool:
    """Still within the downgrade margin under the tier's thresholds."""
    tier = state.policy.tier
    for level in tier.levels:
        if level.name == name:
            floor = MONEY_CONTEXT.multiply(level.min_revenue, 1 - tier.revenue_margin)
            return (
                state.win_revenue >= floor
                and state.win_purchases >= level.min_purchases - tier.purchase_margin
            )
    return True


def _evaluate_tier(
    state: CustomerState, t: int, trigger: InputEvent | None, changes: list[Change]
) -> None:
    current = state.tier
    qualified = _qualified_tier(state)
    if qualified == current:
        state.below_since = None
        return
    if _rank(state, qualified) > _rank(state, current):
        state.below_since = None
        _set_tier(state, t, qualified, "tier.upgrade", "upgrades apply at once", trigger, changes)
        return
    if _holds(state, current):
        state.below_since = None
        return
    if state.below_since is None:
        state.below_since = t
    if t >= state.below_since + state.policy.tier.grace_us:
        state.below_since = None
        _set_tier(
            state,
            t,
            qualified,
            "tier.downgrade",
            "below the downgrade margin for the whole grace period",
            trigger,
            changes,
        )


def _set_tier(  # noqa: PLR0917
    state: CustomerState,
    t: int,
    new: str,
    rule: str,
    message: str,
    trigger: InputEvent | None,
    changes: list[Change],
) -> None:
    policy = state.policy
    level = next((lv for lv in policy.tier.levels if lv.name == new), None)
    old_level = next((lv for lv in policy.tier.levels if lv.name == state.tier), None)
    inputs: dict[str, Any] = {
        "net_revenue_base": state.win_revenue,
        "base_currency": policy.base_currency,
        "purchases_in_window": state.win_purchases,
    }
    if state.fx_excluded:
        inputs["excluded_no_fx_rate"] = dict(sorted(state.fx_excluded.items()))
    if state.fx_fallbacks:
        inputs["fx_earliest_rate_fallbacks"] = state.fx_fallbacks
    thresholds = dict(signals.fixed_thresholds(policy)["tier"])
    for name, lv in (("to", level), ("from", old_level)):
        if lv is not None:
            thresholds[f"{name}_min_revenue"] = lv.min_revenue
            thresholds[f"{name}_min_purchases"] = lv.min_purchases
    if state.fx_excluded:
        excluded = ", ".join(f"{c} x{n}" for c, n in sorted(state.fx_excluded.items()))
        message += f"; events without an FX rate excluded from revenue ({excluded})"
    ids = (
        _trigger_ids(trigger) if trigger is not None else tuple(e[3] for e in list(state.win)[-1:])
    )
    reason = Reason(rule, message, policy.version, inputs, thresholds, ids)
    if state.emit:
        changes.append(_change(state, "tier", state.tier, new, t, (reason,)))
    state.tier = new
    state.tier_since = t
    state.tier_reasons = (reason,)


# lifecycle


def _allowances(state: CustomerState) -> tuple[int, int]:
    """(at risk after, churned after) in microseconds of inactivity, from own cadence."""
    return state.allowance


def _refresh_cadence(state: CustomerState) -> None:
    """Recompute the cached cadence values; they change only with a purchase."""
    policy = state.policy
    life = policy.lifecycle
    num, den = state.interval = signals.cadence_of(
        policy, state.purchase_count, state.last_purchase_us - state.first_purchase_us
    )
    at_risk = -(-life.at_risk_after_intervals * num // (den * SCALE))
    churned = -(-life.churned_after_intervals * num // (den * SCALE))
    state.allowance = (max(life.at_risk_min_us, at_risk), max(life.churned_min_us, churned))


def _inactivity_level(state: CustomerState, t: int) -> int:
    if state.subs or state.last_commerce_us is None:
        return 0
    at_risk, churned = _allowances(state)
    idle = t - state.last_commerce_us
    return 2 if idle >= churned else 1 if idle >= at_risk else 0


def _loyal(state: CustomerState, t: int) -> bool:
    life = state.policy.lifecycle
    return (
        state.purchase_count >= life.loyal_min_purchases
        and t - state.first_purchase_us >= life.loyal_min_tenure_us
    )


def _next_stage(state: CustomerState, t: int) -> tuple[str, str, str] | None:  # noqa: PLR0911 -- a transition table: one return per transition
    """(stage, rule, message) of the transition due at ``t``, if any."""
    stage = state.stage
    life = state.policy.lifecycle
    idle = _inactivity_level(state, t)
    if stage == "prospect":
        if state.purchase_count or state.ever_subscribed:
            return "new", "lifecycle.first_commerce", "first purchase or subscription"
        return None
    if stage in _ENGAGED:
        if state.cancel_risk:
            return "at_risk", "lifecycle.subscription_cancelled", "last subscription cancelled"
        if idle >= 1:
            return "at_risk", "lifecycle.inactivity", "no purchase for longer than allowed"
        if stage == "new" and (
            state.purchase_count >= life.active_min_purchases or state.renewal_count
        ):
            return "active", "lifecycle.repeat_purchase", "a repeat purchase or renewal"
        if stage == "active" and _loyal(state, t):
            return "loyal", "lifecycle.loyal", "enough purchases over enough tenure"
        if (
            stage == "reactivated"
            and state.purchase_count - state.react_base >= life.reactivated_confirm_purchases
        ):
            return "active", "lifecycle.reactivation_confirmed", "purchased again after coming back"
        return None
    if stage == "at_risk":
        if idle == 2:
            return "churned", "lifecycle.inactivity", "no purchase for longer than allowed"
        if idle == 0 and not state.cancel_risk:
            return "active", "lifecycle.activity_resumed", "purchased or subscribed again"
        return None
    if idle == 0 and not state.cancel_risk:  # churned
        return "reactivated", "lifecycle.reactivated", "came back after churning"
    return None


def _evaluate_lifecycle(
    state: CustomerState, t: int, trigger: InputEvent | None, changes: list[Change]
) -> None:
    for _ in range(_MAX_STEPS_PER_INSTANT):
        step = _next_stage(state, t)
        if step is None:
            return
        new, rule, message = step
        _set_stage(state, t, new, rule, message, trigger, changes)


def _set_stage(  # noqa: PLR0917
    state: CustomerState,
    t: int,
    new: str,
    rule: str,
    message: str,
    trigger: InputEvent | None,
    changes: list[Change],
) -> None:
    policy = state.policy
    at_risk, churned = _allowances(state)
    num, den = signals.expected_interval(state)
    inputs: dict[str, Any] = {
        "purchase_count": state.purchase_count,
        "renewal_count": state.renewal_count,
        "active_subscriptions": len(state.subs),
        "expected_interval_days": signals.days(num // den),
    }
    if state.last_commerce_us is not None:
        inputs["last_commerce_at"] = from_micros(state.last_commerce_us)
        inputs["days_inactive"] = signals.days(t - state.last_commerce_us)
    if state.purchase_count:
        inputs["tenure_days"] = signals.days(t - state.first_purchase_us)
    thresholds = {
        "at_risk_after_days": signals.days(at_risk),
        "churned_after_days": signals.days(churned),
        **signals.fixed_thresholds(policy)["lifecycle"],
    }
    extra = state.cancel_id if rule == "lifecycle.subscription_cancelled" else ""
    ids = _trigger_ids(trigger, extra or state.last_commerce_id)
    reason = Reason(rule, message, policy.version, inputs, thresholds, ids)
    old = state.stage
    if state.stage_since is not None:
        state.stage_us[old] = state.stage_us.get(old, 0) + t - state.stage_since
    state.stage_entries[new] = state.stage_entries.get(new, 0) + 1
    state.stage = new
    state.stage_since = t
    state.stage_reasons = (reason,)
    if new == "reactivated":
        state.react_base = state.purchase_count
    if state.emit:
        changes.append(_change(state, "lifecycle", old, new, t, (reason,)))


# alert


def _score_centi(state: CustomerState, t: int) -> int:
    return signals.other_centi(state, t) + signals.inactivity_centi(state, t)


def _ops_action(state: CustomerState, t: int, event: InputEvent, changes: list[Change]) -> None:
    """Ops actions apply to the open alert they name; anything else is ignored."""
    facts = event.facts
    if not state.alert_open or facts.get("alert_id") != state.alert_id:
        return
    by = str(facts.get("by", ""))
    reason = Reason(
        rule=f"alert.{event.kind.removeprefix('alert_')}",
        message=str(facts.get("reason", "")) or "ops action",
        policy_version=state.policy.version,
        inputs={"by": by},
        event_ids=(event.event_id,),
    )
    if event.kind == ALERT_ACKNOWLEDGED:
        if state.alert_status != "acknowledged":
            _set_alert(state, t, "acknowledged", (reason,), changes)
    elif event.kind == ALERT_SNOOZED:
        until = _instant(facts.get("until"))
        if until is None or until <= t:
            return
        state.snooze_until = until
        reason = Reason(
            reason.rule,
            reason.message,
            reason.policy_version,
            {"by": by, "until": from_micros(until)},
            event_ids=reason.event_ids,
        )
        _set_alert(state, t, "snoozed", (reason,), changes)
    else:
        state.alert_armed = False
        _set_alert(state, t, "resolved", (reason,), changes)


def _instant(value: object) -> int | None:
    if isinstance(value, datetime):
        return to_micros(value) if value.utcoffset() is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return to_micros(parsed) if parsed.utcoffset() is not None else None
    return None


def _evaluate_alert(
    state: CustomerState, t: int, trigger: InputEvent | None, changes: list[Change]
) -> None:
    churn = state.policy.churn
    if state.stage == "churned":
        state.alert_armed = True
        if state.alert_open:
            reason = Reason(
                "alert.closed_churned",
                "the customer churned: the alert is closed, nothing left to prevent",
                state.policy.version,
                event_ids=state.stage_reasons[0].event_ids if state.stage_reasons else (),
            )
            _set_alert(state, t, "closed", (reason,), changes)
        return
    centi = _score_centi(state, t)
    score = signals.score_of(centi)
    if not state.alert_open:
        if not state.alert_armed:
            if score < churn.warning - churn.resolve_margin:
                state.alert_armed = True
            return
        if score >= churn.warning:
            state.alert_seq += 1
            state.alert_id = alert_id_for(state.customer_id, state.alert_seq)
            state.alert_severity = "critical" if score >= churn.critical else "warning"
            status = "escalated" if state.alert_severity == "critical" else "raised"
            _set_alert(state, t, status, _score_reasons(state, t, score, "alert.raised", trigger),
                       changes, from_value="none")  # fmt: skip
        return
    if score < churn.warning - churn.resolve_margin:
        _set_alert(
            state, t, "auto_resolved",
            _score_reasons(state, t, score, "alert.auto_resolved", trigger), changes,
        )  # fmt: skip
    elif score >= churn.critical and state.alert_severity == "warning":
        state.alert_severity = "critical"
        _set_alert(
            state, t, "escalated",
            _score_reasons(state, t, score, "alert.escalated", trigger), changes,
        )  # fmt: skip
    elif (
        state.alert_status == "snoozed"
        and state.snooze_until is not None
        and t >= state.snooze_until
    ):
        status = "escalated" if state.alert_severity == "critical" else "raised"
        reason = Reason(
            "alert.snooze_ended",
            "the snooze ended and the alert is still open",
            state.policy.version,
            inputs={"until": from_micros(state.snooze_until)},
        )
        _set_alert(state, t, status, (reason,), changes)


def _score_reasons(
    state: CustomerState, t: int, score: int, rule: str, trigger: InputEvent | None
) -> tuple[Reason, ...]:
    policy = state.policy
    level = signals.level_of(score, policy.churn)
    head = Reason(
        rule,
        f"churn score {score} ({level})",
        policy.version,
        inputs={"score": score, "level": level},
        thresholds=signals.fixed_thresholds(policy)["alert"],
        event_ids=_trigger_ids(trigger),
    )
    return (head, *signals.signal_reasons(state, t))


def _set_alert(
    state: CustomerState,
    t: int,
    status: str,
    reasons: tuple[Reason, ...],
    changes: list[Change],
    *,
    from_value: str | None = None,
) -> None:
    old = state.alert_status if from_value is None else from_value
    state.alert_status = status
    state.alert_open = status in OPEN_ALERT_STATES
    state.alert_since = t
    state.alert_reasons = reasons
    if status != "snoozed":
        state.snooze_until = None
    if state.emit:
        changes.append(_change(state, "alert", old, status, t, reasons, alert_id=state.alert_id))


# deadlines


def _next_wake(state: CustomerState, t: int) -> int:
    """The earliest planned instant after ``t`` at which evaluation might change something.

    Also sets ``wake_fixed`` (the part of it that only an evaluation can move, see
    :func:`_window_edge`) and ``cross_target``: the score level whose crossing (by
    inactivity alone, between planned instants) would change the alert;
    :func:`_next_step` solves for it.
    """
    policy = state.policy
    fixed = FAR
    dues = state.ticket_dues
    if dues:
        index = bisect_right(dues, t)
        if index < len(dues):
            fixed = dues[index]
    if state.subs:
        lapse = policy.lifecycle.subscription_lapse_us
        for since in state.subs.values():
            due = since + lapse
            if t < due < fixed:
                fixed = due
    if state.below_since is not None:
        due = state.below_since + policy.tier.grace_us
        if t < due < fixed:
            fixed = due
    due = _stage_deadline(state, t)
    if t < due < fixed:
        fixed = due
    if state.alert_open and state.alert_status == "snoozed" and state.snooze_until is not None:
        due = state.snooze_until
        if t < due < fixed:
            fixed = due
    state.wake_fixed = fixed
    state.cross_target = _cross_target(state)
    return _window_wake(state, t, fixed)


def _cross_target(state: CustomerState) -> int | None:
    if state.stage != "churned" and state.purchase_count and not state.subs:
        if not state.alert_open and state.alert_armed:
            return state.policy.churn.warning
        if state.alert_open and state.alert_severity == "warning":
            return state.policy.churn.critical
    return None


def _window_wake(state: CustomerState, t: int, wake: int) -> int:
    """``wake`` or the earliest window edge after ``t``, whichever comes first.

    Window edges: items leaving the tier, trend, complaint or payment windows, the
    survey and the cancellation signal expiring.
    """
    for window in (state.win, state.recent, state.prior):
        if window:
            due = window[0][0]
            if t < due < wake:
                wake = due
    if state.complaints:
        due = state.complaints[0][0]
        if t < due < wake:
            wake = due
    if state.payments:
        due = state.payments[0][0]
        if t < due < wake:
            wake = due
    if state.survey is not None:
        due = state.survey[0]
        if t < due < wake:
            wake = due
    if state.cancel_until is not None:
        due = state.cancel_until
        if t < due < wake:
            wake = due
    return wake


def _window_edge(state: CustomerState, t: int, changes: list[Change]) -> None:
    """Evaluate at a deadline that only window edges produced (``t < wake_fixed``).

    The same result as :func:`_evaluate`, cheaper when nothing happens, which is most of
    the time (a purchase leaving the trailing year rarely moves the tier). Why the
    shortcuts are exact: window edges change no lifecycle input and no source of
    ``wake_fixed``, and every evaluation leaves tier, stage and alert at a fixed point.
    So the tier can only move if the tier window lost an item; the alert only if a
    score input left its window, or (``cross_target``) inactivity pushed the score up.
    The stage cannot move: its time-driven transitions are sources of ``wake_fixed``.
    Nor can inactivity have pushed the score over ``cross_target`` when the crossing
    solved up to ``t`` (:func:`_next_step`) lies after it. When tier, stage and alert
    would all stay put, what remains is the prune and the next window edge; otherwise
    the evaluation is completed in full.
    """
    moved = _prune_windows(state, t)  # no subscription lapses here: t < wake_fixed
    quiet = True
    if moved & _TIER_MOVED:
        tier, below = state.tier, state.below_since
        _evaluate_tier(state, t, None, changes)
        quiet = state.tier == tier and state.below_since == below
    if quiet and (
        moved & _SCORE_MOVED
        or (state.cross_target is not None and (state.calm_until < t or state.cross_at <= t))
    ):
        quiet = _alert_quiet(state, t)
    if quiet:
        state.wake = _window_wake(state, t, state.wake_fixed)
    else:
        _evaluate_lifecycle(state, t, None, changes)
        _evaluate_alert(state, t, None, changes)
        state.wake = _next_wake(state, t)
    state.calm_until = t
    state.cross_at = FAR


def _alert_quiet(state: CustomerState, t: int) -> bool:
    """True when :func:`_evaluate_alert` at ``t`` would change nothing (no side effects)."""
    churn = state.policy.churn
    if state.stage == "churned":
        return state.alert_armed and not state.alert_open
    score = signals.score_of(_score_centi(state, t))
    if not state.alert_open:
        if not state.alert_armed:
            return score >= churn.warning - churn.resolve_margin
        return score < churn.warning
    if score < churn.warning - churn.resolve_margin:
        return False
    if score >= churn.critical and state.alert_severity == "warning":
        return False
    return not (
        state.alert_status == "snoozed"
        and state.snooze_until is not None
        and t >= state.snooze_until
    )


def _stage_deadline(state: CustomerState, t: int) -> int:
    """The next instant a stage transition can fall due with no new event.

    Inactivity limits (not while a subscription is active) and, for an active customer
    with enough purchases, the loyalty tenure, which an active subscription does not
    suspend: window edges rely on every time-driven transition being a deadline here.
    """
    stage = state.stage
    if stage in ("prospect", "churned") or state.last_commerce_us is None:
        return FAR
    deadline = FAR
    if not state.subs:
        at_risk, churned = _allowances(state)
        if stage == "at_risk":
            return state.last_commerce_us + churned
        deadline = state.last_commerce_us + at_risk
    if stage == "active" and state.purchase_count >= state.policy.lifecycle.loyal_min_purchases:
        tenure = state.first_purchase_us + state.policy.lifecycle.loyal_min_tenure_us
        if tenure > t:
            deadline = min(deadline, tenure)
    return deadline
