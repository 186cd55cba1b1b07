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

This module drives the process; each projection has its own module (:mod:`.tier`,
:mod:`.lifecycle`, :mod:`.alert`, :mod:`.churn`), as do the recording of facts
(:mod:`.facts`) and the deadlines (:mod:`.deadlines`).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from operator import itemgetter
from typing import Any

from projections import churn as signals
from projections.alert import evaluate_alert, ops_action
from projections.changes import change
from projections.deadlines import next_wake, window_edge
from projections.facts import LIFECYCLE_KINDS, RELEVANT_KINDS, TIER_KINDS, prune, record
from projections.lifecycle import evaluate_lifecycle
from projections.model import (
    CORRECTION_RULE,
    OPS_KINDS,
    Change,
    InputEvent,
    Reason,
    ReplayStep,
    Snapshot,
    StepSummary,
    from_micros,
    to_micros,
)
from projections.policy import Policy
from projections.signals import ChurnInputs
from projections.state import FAR, STATE_SLOTS, CustomerState
from projections.tier import evaluate_tier

_Sink = Callable[[list[Change]], Any]

_StepSink = Callable[[int, list[Change]], Any]


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
    probe = state.copy(probe=True)
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


def fold_through(
    customer_id: str,
    events: Iterable[InputEvent],
    policy: Policy,
    instants: Iterable[datetime],
    *,
    on_change: Callable[[list[Change]], Any] | None = None,
) -> Iterator[tuple[datetime, CustomerState]]:
    """One pass through the customer's history, stopping at each instant (in time order):
    yields the state there, which is the state :func:`fold` gives for that ``as_of``.

    The state is the fold's own, mutable: read it before asking for the next one.
    ``on_change`` receives every change on the way (none are built without it).
    """
    stops = sorted(instants)
    if not stops:
        return
    state = CustomerState(customer_id, policy)
    state.emit = on_change is not None
    sink: _Sink = on_change if on_change is not None else _discard
    steps = _ignore_step if on_change is None else _step_sink(sink)
    items = _ordered(events, to_micros(stops[-1]))
    position = 0
    for instant in stops:
        limit = to_micros(instant)
        while position < len(items) and items[position][1] <= limit:
            event, at, key = items[position]
            _fold_event(state, event, at, key, sink)
            position += 1
        _advance(state, limit, steps)
        yield instant, state


def churn_inputs(state: CustomerState, t: datetime) -> ChurnInputs | None:
    """The churn signals' raw values at ``t`` (None for a customer who never bought)."""
    return signals.inputs_at(state, to_micros(t))


def replay(
    customer_id: str, events: Iterable[InputEvent], policy: Policy, *, as_of: datetime
) -> list[ReplayStep]:
    """The audited fold: each event and each time-driven change, in time order, with the
    visible state after it (:class:`StepSummary`, equal to the same fields of a
    :func:`snapshot` taken there).

    Time-driven steps are the deadlines that changed something (a tier, stage or alert
    change, or the churn level: a complaint leaving its window lowers it) and the
    instants the score reaches a higher level by time alone (kind ``score``). The last
    step is the state as of ``as_of`` (kind ``as_of`` when nothing happened exactly
    then): it equals ``snapshot(fold(..., as_of=as_of))``.
    """
    state = CustomerState(customer_id, policy)
    limit = to_micros(as_of)
    steps: list[ReplayStep] = []
    summarize = _summarizer(state)

    def step(at: int, changes: list[Change], kind: str, event: InputEvent | None = None) -> None:
        summary = summarize()
        level = steps[-1].summary.churn_level if steps else "none"
        if event is None and not changes and kind == "deadline" and summary.churn_level == level:
            return
        when = event.occurred_at if event is not None else from_micros(at)
        steps.append(
            ReplayStep(when, None if event is None else event.event_id,
                       kind if event is None else event.kind, summary, tuple(changes))
        )  # fmt: skip

    for event, at, key in _ordered(events, limit):
        _advance_audited(state, at, step)
        found: list[Change] = []
        _fold_event(state, event, at, key, found.extend)
        step(at, found, event.kind, event)
    _advance_audited(state, limit, step)
    if not steps or to_micros(steps[-1].at) < limit:
        step(limit, [], "as_of")
    return steps


def _advance_audited(
    state: CustomerState, t: int, step: Callable[[int, list[Change], str], None]
) -> None:
    """:func:`_advance` for a replay: every deadline goes to ``step``, and so does each
    instant before it at which the score alone reaches a higher churn level."""
    while True:
        at = _next_step(state, t)
        _level_steps(state, t if at is None else at, step)
        if at is None:
            break
        state.clock = at
        changes: list[Change] = []
        if at == state.wake and at < state.wake_fixed:
            window_edge(state, at, changes)
        else:
            _evaluate(state, at, None, changes)
        step(at, changes, "deadline")
    if state.clock is None or t > state.clock:
        state.clock = t


def _level_steps(
    state: CustomerState, until: int, step: Callable[[int, list[Change], str], None]
) -> None:
    """Steps at the instants in ``(clock, until)`` where time alone lifts the score to a
    higher churn level (nothing else moves before ``until``, a deadline or the target)."""
    churn = state.policy.churn
    while state.clock is not None and until > state.clock + 1:
        score = signals.score_at(state, state.clock)
        above = [level for level in (churn.watch, churn.warning, churn.critical) if level > score]
        if not above:
            return
        instant = signals.crossing(state, state.clock, until - 1, above[0])
        if instant is None:
            return
        _advance(state, instant, _ignore_step)
        lifted = signals.score_at(state, instant)
        if lifted <= score:
            # `crossing` solves for the time curves against the static part at the
            # interval's start; when that part moved inside it (a ticket leaving its
            # window), or the score is held (at 0 once churned), the instant found does
            # not lift the score, and stepping on would walk to ``until`` one microsecond
            # at a time. No level step there.
            return
        if lifted < above[0]:
            continue  # lifted, but not to the level: solve again from here (bounded:
            # the score rises by at least one step each time)
        step(instant, [], "score")


def _summarizer(state: CustomerState) -> Callable[[], StepSummary]:
    """The step summaries of one replay (the stage entry instant converted once)."""
    churn = state.policy.churn
    entered: list[Any] = [None, None]  # stage_since, as a datetime

    def summarize() -> StepSummary:
        t = state.clock
        score = 0 if t is None else signals.score_at(state, t)
        since = state.stage_since
        if since != entered[0]:
            entered[:] = [since, None if since is None else from_micros(since)]
        return StepSummary(
            state.tier,
            state.stage,
            entered[1],
            signals.as_points(score),
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
        score = signals.score_at(state, t)
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
        churn_score=signals.as_points(score),
        churn_level=signals.level_of(score, state.policy.churn),
        alert_state=state.alert_status,
        alert_id=state.alert_id,
        alert_open=state.alert_open,
        last_purchase_at=from_micros(state.last_purchase_us) if state.purchase_count else None,
        net_revenue_base=state.win_revenue,
        base_currency=state.policy.base_currency,
        purchase_count=state.purchase_count,
        window_purchase_count=state.win_purchases,
        reasons=state.tier_reasons + state.stage_reasons + state.alert_reasons,
        churn_signals=churn_reasons,
        policy_version=state.policy.version,
        evaluated_at=None if t is None else from_micros(t),
        event_count=len(state.events),
    )


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
            window_edge(state, at, changes)
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
    if event.kind not in RELEVANT_KINDS:
        return
    changes: list[Change] = []
    record(state, event, at)
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
    for name in STATE_SLOTS:
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
    for name in STATE_SLOTS:
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
        rule=CORRECTION_RULE,
        message="an event older than the last one folded arrived; history was refolded",
        policy_version=state.policy.version,
        inputs={"occurred_at": late.occurred_at},
        event_ids=(late.event_id,),
    )
    changes: list[Change] = []
    clock = state.clock or 0
    if before[0] != after[0]:
        changes.append(
            change(state, "tier", before[0], after[0], state.tier_since or clock,
                    (note, *state.tier_reasons))
        )  # fmt: skip
        changes[-1] = _with_ids(changes[-1], late.event_id)
    if before[1] != after[1]:
        changes.append(
            change(state, "lifecycle", before[1], after[1], state.stage_since or clock,
                    (note, *state.stage_reasons))
        )  # fmt: skip
        changes[-1] = _with_ids(changes[-1], late.event_id)
    if before[2:] != after[2:]:
        changes.append(
            change(state, "alert", before[2], after[2], state.alert_since or clock,
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
        prune(state, t)
        evaluate_tier(state, t, trigger, changes)
        evaluate_lifecycle(state, t, trigger, changes)
    else:
        kind = trigger.kind
        if kind in TIER_KINDS:
            evaluate_tier(state, t, trigger, changes)
        if kind in LIFECYCLE_KINDS:
            evaluate_lifecycle(state, t, trigger, changes)
        if kind in OPS_KINDS:
            ops_action(state, t, trigger, changes)
    evaluate_alert(state, t, trigger, changes)
    state.wake = next_wake(state, t)
    state.calm_until = t
    state.cross_at = FAR
