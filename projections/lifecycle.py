"""The lifecycle stage: prospect, new, active, loyal, at risk, churned, reactivated.

A transition table over purchases, subscriptions and inactivity measured against the
customer's own cadence (:mod:`projections.cadence`); its time-driven transitions are
deadlines (:func:`stage_deadline`), which the window-edge shortcut relies on.
"""

from __future__ import annotations

from typing import Any, Final

from projections import churn as signals
from projections.changes import change, trigger_ids
from projections.model import Change, InputEvent, Reason, from_micros
from projections.state import FAR, CustomerState
from projections.vocabulary import Stage

_ENGAGED: Final[frozenset[Stage]] = frozenset({"new", "active", "loyal", "reactivated"})

_MAX_STEPS_PER_INSTANT: Final = 8


def _allowances(state: CustomerState) -> tuple[int, int]:
    """(at risk after, churned after) in microseconds of inactivity, from own cadence."""
    return state.allowance


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


def _next_stage(state: CustomerState, t: int) -> tuple[Stage, str, str] | None:  # noqa: PLR0911 -- a transition table: one return per transition
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


def evaluate_lifecycle(
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
    new: Stage,
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
    ids = trigger_ids(trigger, extra or state.last_commerce_id)
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
        changes.append(change(state, "lifecycle", old, new, t, (reason,)))


def stage_deadline(state: CustomerState, t: int) -> int:
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
