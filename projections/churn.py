"""The churn score: named signals in exact integer arithmetic, and when it will cross a level.

Points are computed in hundredths ("centi-points") with integer math only, so the score
is the same on every machine and the instant at which inactivity alone will push it
over a threshold can be solved exactly (no search, no floating point): that instant is
a deadline, and live timers and replays must agree on it to the microsecond.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from projections.model import Reason, from_micros
from projections.policy import DAY_US, MONEY_CONTEXT, SCALE, ChurnPolicy, Policy
from projections.state import CustomerState
from projections.vocabulary import ChurnLevel

_HUNDREDTH: Final = Decimal("0.01")


def expected_interval(state: CustomerState) -> tuple[int, int]:
    """The customer's expected purchase interval as an exact fraction ``(num_us, den)``.

    The mean of their own intervals, blended with the population prior worth
    ``prior_weight`` intervals, so one or two purchases do not define a cadence.
    Cached in the state (``interval``): it changes only with a purchase, see
    :func:`projections.cadence.cadence_of`.
    """
    return state.interval


def inactivity_centi(state: CustomerState, t: int) -> int:
    """Points for time since the last purchase.

    Two monotone parts: time measured in the customer's own expected intervals (the
    point of the signal: 30 days is nothing for a quarterly buyer and a lot for a
    weekly one) plus a smaller part in absolute days, because with the same relative
    gap a slow buyer has had fewer chances to show they are still there.
    """
    if state.purchase_count == 0 or state.subs:
        return 0
    elapsed = t - state.last_purchase_us
    if elapsed <= 0:
        return 0
    churn = state.policy.churn
    num, den = state.interval
    x = elapsed * den * SCALE // num - churn.inactivity_start
    relative = churn.inactivity_weight * 100 * x // (x + churn.inactivity_half) if x > 0 else 0
    return relative + churn.recency_weight * 100 * elapsed // (elapsed + churn.recency_half_us)


def other_centi(state: CustomerState, t: int) -> int:
    """Points of every signal but inactivity: constant between deadlines.

    All but the tickets past SLA (counted at ``t``) are cached in the state
    (``other_base``) until an event or a window edge moves one of them, or the trend
    cache is reset.
    """
    total = state.other_base
    if total < 0 or state.trend < 0:
        total = state.other_base = _other_base(state)
    if state.ticket_dues:
        breached = bisect_right(state.ticket_dues, t)
        if breached:
            churn = state.policy.churn
            total += min(churn.ticket_max, breached * churn.ticket_weight) * 100
    return total


def _other_base(state: CustomerState) -> int:
    churn = state.policy.churn
    total = trend_centi(state, churn)
    if state.complaint_units:
        total += min(churn.complaint_max, state.complaint_units * churn.complaint_weight) * 100
    survey = state.survey
    if survey is not None and survey[1] <= churn.nps_detractor_max:
        total += churn.nps_weight * 100
    if state.payments:
        total += min(churn.payment_max, len(state.payments) * churn.payment_weight) * 100
    if state.cancel_until is not None:
        total += churn.cancel_weight * 100
    return total


def trend_centi(state: CustomerState, churn: ChurnPolicy) -> int:
    """Points for a drop in spend; cached in the state until either sum changes."""
    if state.trend >= 0:
        return state.trend
    prior, recent = state.prior_sum, state.recent_sum
    points = 0
    if not (prior <= 0 or prior < churn.trend_min_prior or recent >= prior):
        drop = MONEY_CONTEXT.divide_int(
            MONEY_CONTEXT.multiply(Decimal(churn.trend_weight * 100), prior - recent), prior
        )
        points = min(int(drop), churn.trend_weight * 100)
    state.trend = points
    return points


def breached_tickets(state: CustomerState, t: int) -> int:
    """Open tickets whose SLA instant is at or before ``t``."""
    return bisect_right(state.ticket_dues, t)


def score_of(centi: int) -> int:
    score = (centi + 50) // 100
    return 0 if score < 0 else min(score, 100)


def level_of(score: int, churn: ChurnPolicy) -> ChurnLevel:
    if score >= churn.critical:
        return "critical"
    if score >= churn.warning:
        return "warning"
    if score >= churn.watch:
        return "watch"
    return "none"


def crossing(state: CustomerState, after: int, until: int, target_score: int) -> int | None:
    """The first instant in ``(after, until]`` at which the score reaches the target.

    Only inactivity grows with time and the other signals are constant up to the next
    deadline (``until`` must not pass it), so the score is monotone there and its first
    instant at or over the target is well defined, to the microsecond. It is solved
    exactly in integers (:func:`_first_elapsed`), not searched; a binary search over
    integer microseconds is the reference and the fallback.
    """
    need = target_score * 100 - 50 - other_centi(state, after)
    if state.purchase_count == 0 or state.subs or until <= state.last_purchase_us:
        if inactivity_centi(state, until) < need:
            return None
        return search_crossing(state, after, until, need)
    relative, absolute = _parts(state, until - state.last_purchase_us)
    if relative + absolute < need:
        return None
    first = state.last_purchase_us + _first_elapsed(state, need, relative, absolute)
    if first <= after:
        return after + 1
    return first if first <= until else search_crossing(state, after, until, need)


def _parts(state: CustomerState, elapsed: int) -> tuple[int, int]:
    """(relative, absolute) inactivity points after ``elapsed`` > 0 microseconds."""
    churn = state.policy.churn
    num, den = state.interval
    x = elapsed * den * SCALE // num - churn.inactivity_start
    relative = churn.inactivity_weight * 100 * x // (x + churn.inactivity_half) if x > 0 else 0
    return relative, churn.recency_weight * 100 * elapsed // (elapsed + churn.recency_half_us)


def search_crossing(state: CustomerState, after: int, until: int, need: int) -> int:
    """Binary search for the first instant in ``(after, until]`` with inactivity points
    at least ``need``, given that ``until`` has them (the reference for the solution)."""
    low, high = after, until  # score(low) < target <= score(high)
    while high - low > 1:
        middle = (low + high) // 2
        if inactivity_centi(state, middle) >= need:
            high = middle
        else:
            low = middle
    return high


_NEVER: Final = 1 << 80


def _first_elapsed(state: CustomerState, need: int, relative: int, absolute: int) -> int:
    """The least elapsed time (us, >= 1) whose inactivity points reach ``need``.

    The points are ``R(e) + A(e)``, the relative and absolute parts, both nondecreasing
    integer step functions of the elapsed time ``e`` whose least preimages have closed
    forms (``R_from``, ``A_from`` below: solve ``weight * y // (y + half) >= points``
    for ``y``, then ``y`` for ``e``). The sum reaches ``need`` exactly when, for some
    split ``r``, ``R(e) >= r`` and ``A(e) >= need - r``; so the answer is
    ``min over r of max(R_from(r), A_from(need - r))``: an increasing and a decreasing
    sequence in ``r``, the least ``r`` where the first reaches the second is found by
    bisection, and the minimum is there or just before it. ``relative`` and ``absolute``
    are the parts at an elapsed time known to reach ``need``: the split ``R(e)`` at the
    answer lies between ``need - absolute`` and ``relative``, which bounds the search.
    """
    if need <= 0:
        return 1
    churn = state.policy.churn
    r_top, r_half = churn.inactivity_weight * 100, churn.inactivity_half
    a_top, a_half = churn.recency_weight * 100, churn.recency_half_us
    start = churn.inactivity_start
    num, den = state.interval
    scale = den * SCALE

    def r_from(points: int) -> int:
        if points <= 0:
            return 1
        if points >= r_top:
            return _NEVER
        x = -(-points * r_half // (r_top - points))
        return max(1, -(-(x + start) * num // scale))

    def a_from(points: int) -> int:
        if points <= 0:
            return 1
        if points >= a_top:
            return _NEVER
        return max(1, -(-points * a_half // (a_top - points)))

    # The optimal split r0 = R(answer) is in [need - absolute, min(need, relative)]; the
    # predicate below holds at need (a_from(0) = 1), so high = need is safe.
    low, high = max(0, need - absolute), need
    floor = low
    while low < high:
        middle = (low + high) // 2
        if r_from(middle) >= a_from(need - middle):
            high = middle
        else:
            low = middle + 1
    best = r_from(low)
    if low > floor:
        best = min(best, a_from(need - low + 1))
    return best


def _points(centi: int) -> Decimal:
    return Decimal(centi) / 100


def _days(micros: int) -> Decimal:
    """``micros`` in days, rounded half-even to two decimals (exact integer math)."""
    if micros < 0:
        return MONEY_CONTEXT.divide(Decimal(micros), Decimal(DAY_US)).quantize(
            _HUNDREDTH, context=MONEY_CONTEXT
        )
    hundredths, rest = divmod(micros * 100, DAY_US)
    if 2 * rest > DAY_US or (2 * rest == DAY_US and hundredths & 1):
        hundredths += 1
    return Decimal(hundredths).scaleb(-2)


_FIXED: dict[int, tuple[Policy, dict[str, Mapping[str, Any]]]] = {}


def fixed_thresholds(policy: Policy) -> dict[str, Mapping[str, Any]]:
    """The constant thresholds of each reason (churn signals, alert, and the constant part
    of tier and lifecycle): built once per policy and shared by every reason that names
    them (read-only by contract, like the reasons; tier and lifecycle copy theirs)."""
    known = _FIXED.get(id(policy))
    if known is not None and known[0] is policy:
        return known[1]
    churn = policy.churn
    fixed: dict[str, Mapping[str, Any]] = {
        "inactivity": {
            "weight": churn.inactivity_weight,
            "start_intervals": Decimal(churn.inactivity_start) / SCALE,
            "half_intervals": Decimal(churn.inactivity_half) / SCALE,
            "prior_interval_days": _days(policy.cadence.prior_interval_us),
            "prior_weight": policy.cadence.prior_weight,
            "recency_weight": churn.recency_weight,
            "recency_half_days": _days(churn.recency_half_us),
        },
        "spend_trend": {
            "weight": churn.trend_weight,
            "window_days": _days(churn.trend_window_us),
            "min_prior_revenue": churn.trend_min_prior,
        },
        "complaints": {
            "weight_each": churn.complaint_weight,
            "max": churn.complaint_max,
            "window_days": _days(churn.complaint_window_us),
        },
        "tickets_past_sla": {
            "weight_each": churn.ticket_weight,
            "max": churn.ticket_max,
            "sla_hours": {k: v // 3_600_000_000 for k, v in churn.ticket_sla_us.items()},
        },
        "nps_detractor": {
            "weight": churn.nps_weight,
            "detractor_max_score": churn.nps_detractor_max,
            "window_days": _days(churn.nps_window_us),
        },
        "payment_failures": {
            "weight_each": churn.payment_weight,
            "max": churn.payment_max,
            "window_days": _days(churn.payment_window_us),
        },
        "tier": {
            "window_days": _days(policy.tier.window_us),
            "downgrade_margin": policy.tier.revenue_margin,
            "purchase_margin": policy.tier.purchase_margin,
            "grace_days": _days(policy.tier.grace_us),
        },
        "lifecycle": {
            "active_min_purchases": policy.lifecycle.active_min_purchases,
            "loyal_min_purchases": policy.lifecycle.loyal_min_purchases,
            "loyal_min_tenure_days": _days(policy.lifecycle.loyal_min_tenure_us),
        },
        "alert": {
            "watch": churn.watch,
            "warning": churn.warning,
            "critical": churn.critical,
            "resolve_below": churn.warning - churn.resolve_margin,
        },
        "cancellation": {
            "weight": churn.cancel_weight,
            "window_days": _days(churn.cancel_window_us),
        },
    }
    if len(_FIXED) >= _FIXED_MAX:
        _FIXED.clear()
    _FIXED[id(policy)] = (policy, fixed)
    return fixed


_FIXED_MAX: Final = 16


def signal_reasons(state: CustomerState, t: int) -> tuple[Reason, ...]:
    """Every signal that contributes, with its inputs, thresholds and points."""
    policy: Policy = state.policy
    churn = policy.churn
    version = policy.version
    fixed = fixed_thresholds(policy)
    reasons: list[Reason] = []
    centi = inactivity_centi(state, t)
    if centi:
        num, den = expected_interval(state)
        idle, expected = _days(t - state.last_purchase_us), _days(num // den)
        reasons.append(
            Reason(
                rule="churn.inactivity",
                message=(f"{idle} days since the last purchase, expected interval {expected} days"),
                policy_version=version,
                inputs={
                    "last_purchase_at": from_micros(state.last_purchase_us),
                    "days_since_last_purchase": idle,
                    "expected_interval_days": expected,
                    "purchase_count": state.purchase_count,
                },
                thresholds=fixed["inactivity"],
                event_ids=(state.last_purchase_id,),
                points=_points(centi),
            )
        )
    centi = trend_centi(state, churn)
    if centi:
        reasons.append(
            Reason(
                rule="churn.spend_trend",
                message=f"net spend fell from {state.prior_sum} to {state.recent_sum}",
                policy_version=version,
                inputs={"recent_net": state.recent_sum, "prior_net": state.prior_sum},
                thresholds=fixed["spend_trend"],
                points=_points(centi),
            )
        )
    if state.complaints:
        centi = min(churn.complaint_max, state.complaint_units * churn.complaint_weight) * 100
        reasons.append(
            Reason(
                rule="churn.complaints",
                message=f"{len(state.complaints)} complaints in the window",
                policy_version=version,
                inputs={"complaints": len(state.complaints), "units": state.complaint_units},
                thresholds=fixed["complaints"],
                event_ids=tuple(item[2] for item in state.complaints),
                points=_points(centi),
            )
        )
    if state.ticket_dues:
        ticket = _ticket_reason(state, t)
        if ticket is not None:
            reasons.append(ticket)
    if state.survey is not None and state.survey[1] <= churn.nps_detractor_max:
        reasons.append(
            Reason(
                rule="churn.nps_detractor",
                message=f"latest survey score {state.survey[1]}",
                policy_version=version,
                inputs={"score": state.survey[1]},
                thresholds=fixed["nps_detractor"],
                event_ids=(state.survey[2],),
                points=_points(churn.nps_weight * 100),
            )
        )
    if state.payments:
        centi = min(churn.payment_max, len(state.payments) * churn.payment_weight) * 100
        reasons.append(
            Reason(
                rule="churn.payment_failures",
                message=f"{len(state.payments)} failed payments in the window",
                policy_version=version,
                inputs={"failures": len(state.payments)},
                thresholds=fixed["payment_failures"],
                event_ids=tuple(item[1] for item in state.payments),
                points=_points(centi),
            )
        )
    if state.cancel_until is not None:
        reasons.append(
            Reason(
                rule="churn.cancellation",
                message="a subscription was cancelled and not restarted",
                policy_version=version,
                inputs={},
                thresholds=fixed["cancellation"],
                event_ids=(state.cancel_id,),
                points=_points(churn.cancel_weight * 100),
            )
        )
    return tuple(reasons)


def _ticket_reason(state: CustomerState, t: int) -> Reason | None:
    """The tickets-past-SLA reason; memoized in the state, since it depends only on the
    open tickets (``ticket_rev``) and how many of them are past their SLA at ``t``."""
    key = (state.ticket_rev, bisect_right(state.ticket_dues, t))
    memo = state.ticket_memo
    if memo is not None and memo[0] == key:
        return memo[1]
    churn = state.policy.churn
    breached = [ticket for ticket in state.tickets.values() if ticket[0] <= t]
    reason = None
    if breached:
        centi = min(churn.ticket_max, len(breached) * churn.ticket_weight) * 100
        reason = Reason(
            rule="churn.tickets_past_sla",
            message=f"{len(breached)} open tickets past their SLA",
            policy_version=state.policy.version,
            inputs={"breached": len(breached), "open": len(state.tickets)},
            thresholds=fixed_thresholds(state.policy)["tickets_past_sla"],
            event_ids=tuple(ticket[2] for ticket in breached),
            points=_points(centi),
        )
    state.ticket_memo = (key, reason)
    return reason


def days(micros: int) -> Decimal:
    """Microseconds as days with two decimals, for explanations."""
    return _days(micros)
