"""The tier: the highest level whose thresholds the trailing window meets.

Upgrades apply at once; a downgrade only after the whole grace period below the margin,
then to the tier actually qualified for.
"""

from __future__ import annotations

from typing import Any

from projections import churn as signals
from projections.changes import change, trigger_ids
from projections.model import Change, InputEvent, Reason
from projections.policy import MONEY_CONTEXT
from projections.state import CustomerState
from projections.vocabulary import Tier


def _qualified_tier(state: CustomerState) -> Tier:
    for level in state.policy.tier.levels:
        if state.win_revenue >= level.min_revenue and state.win_purchases >= level.min_purchases:
            return level.name
    return "none"


def _rank(state: CustomerState, name: Tier) -> int:
    levels = state.policy.tier.levels
    for index, level in enumerate(levels):
        if level.name == name:
            return len(levels) - index
    return 0


def _holds(state: CustomerState, name: Tier) -> bool:
    """Still within the downgrade margin under the tier's thresholds.

    The purchase margin never lowers the bar below one purchase in the window: every
    tier needs at least one, so without a purchase left in the window no tier holds
    (a lowest tier with a zero-revenue threshold would otherwise never decay).
    """
    tier = state.policy.tier
    for level in tier.levels:
        if level.name == name:
            floor = MONEY_CONTEXT.multiply(level.min_revenue, 1 - tier.revenue_margin)
            return state.win_revenue >= floor and state.win_purchases >= max(
                1, level.min_purchases - tier.purchase_margin
            )
    return True


def evaluate_tier(
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
    new: Tier,
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
    ids = trigger_ids(trigger) if trigger is not None else tuple(e[3] for e in list(state.win)[-1:])
    reason = Reason(rule, message, policy.version, inputs, thresholds, ids)
    if state.emit:
        changes.append(change(state, "tier", state.tier, new, t, (reason,)))
    state.tier = new
    state.tier_since = t
    state.tier_reasons = (reason,)
