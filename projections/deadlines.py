"""Deadlines: the next instant at which a customer's projections may change with no event.

The sources split into window edges (items leaving a window, cheap to recompute) and
the rest (``wake_fixed``: tickets, subscriptions, tier grace, stage, snooze), which only
a full evaluation moves; a deadline that only window edges produced takes the exact
shortcut :func:`window_edge`.
"""

from __future__ import annotations

from bisect import bisect_right

from projections.alert import alert_quiet, cross_target, evaluate_alert
from projections.facts import SCORE_MOVED, TIER_MOVED, prune_windows
from projections.lifecycle import evaluate_lifecycle, stage_deadline
from projections.model import Change
from projections.state import FAR, CustomerState
from projections.tier import evaluate_tier


def next_wake(state: CustomerState, t: int) -> int:
    """The earliest planned instant after ``t`` at which evaluation might change something.

    Also sets ``wake_fixed`` (the part of it that only an evaluation can move, see
    :func:`window_edge`) and ``cross_target``: the score level whose crossing (by
    inactivity alone, between planned instants) would change the alert;
    `projections.driver._next_step` solves for it.
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
    due = stage_deadline(state, t)
    if t < due < fixed:
        fixed = due
    if state.alert_open and state.alert_status == "snoozed" and state.snooze_until is not None:
        due = state.snooze_until
        if t < due < fixed:
            fixed = due
    state.wake_fixed = fixed
    state.cross_target = cross_target(state)
    return _window_wake(state, t, fixed)


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


def window_edge(state: CustomerState, t: int, changes: list[Change]) -> None:
    """Evaluate at a deadline that only window edges produced (``t < wake_fixed``).

    The same result as a full evaluation (`projections.driver._evaluate`), cheaper when
    nothing happens, which is most of the time (a purchase leaving the trailing year
    rarely moves the tier). Why the
    shortcuts are exact: window edges change no lifecycle input and no source of
    ``wake_fixed``, and every evaluation leaves tier, stage and alert at a fixed point.
    So the tier can only move if the tier window lost an item; the alert only if a
    score input left its window, or (``cross_target``) inactivity pushed the score up.
    The stage cannot move: its time-driven transitions are sources of ``wake_fixed``.
    Nor can inactivity have pushed the score over ``cross_target`` when the crossing
    solved up to ``t`` (`projections.driver._next_step`) lies after it. When tier, stage
    and alert would all stay put, what remains is the prune and the next window edge;
    otherwise the evaluation is completed in full.
    """
    moved = prune_windows(state, t)  # no subscription lapses here: t < wake_fixed
    quiet = True
    if moved & TIER_MOVED:
        tier, below = state.tier, state.below_since
        evaluate_tier(state, t, None, changes)
        quiet = state.tier == tier and state.below_since == below
    if quiet and (
        moved & SCORE_MOVED
        or (state.cross_target is not None and (state.calm_until < t or state.cross_at <= t))
    ):
        quiet = alert_quiet(state, t)
    if quiet:
        state.wake = _window_wake(state, t, state.wake_fixed)
    else:
        evaluate_lifecycle(state, t, None, changes)
        evaluate_alert(state, t, None, changes)
        state.wake = next_wake(state, t)
    state.calm_until = t
    state.cross_at = FAR
