"""The churn score: named signals in exact integer arithmetic, and when it will cross a level.

Points are computed in hundredths ("centi-points") with integer math only, so the score
is the same on every machine and the instant at which inactivity alone will push it
over a threshold can be solved exactly (no search, no floating point): that instant is
a deadline, and live timers and replays must agree on it to the microsecond.
"""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from projections.model import Reason, from_micros
from projections.policy import DAY_US, MONEY_CONTEXT, SCALE, ChurnPolicy, Policy

if TYPE_CHECKING:
    from projections.engine import CustomerState

LEVELS: Final = ("none", "watch", "warning", "critical")
_HUNDREDTH: Final = Decimal("0.01")


def expected_interval(state: CustomerState) -> tuple[int, int]:
    """The customer's expected purchase interval as an exact fraction ``(num_us, den)``.

    The mean of their own intervals, blended with the population prior worth
    ``prior_weight`` intervals, so one or two purchases do not define a cadence.
    """
    cadence = state.policy.cadence
    span = 0
    if state.purchase_count >= 2:
        span = state.last_purchase_us - state.first_purchase_us
    return (
        cadence.prior_weight * cadence.prior_interval_us + span,
        cadence.prior_weight + max(state.purchase_count - 1, 0),
    )


def inactivity_centi(state: CustomerState, t: int) -> int:
    """Points for time since the last purchase.

    Two monotone parts: time measured in the customer's own expected intervals (the
    point of the signal: 30 days is nothing for a quarterly buyer and a lot for a
    weekly one) plus a smaller part in absolute days, because with the same relative
    gap a slow buyer has had fewer chances to show they are still there.
    """
    if state.purchase_count == 0 or state.subs:
        return 0
    churn = state.policy.churn
    elapsed = t - state.last_purchase_us
    if elapsed <= 0:
        return 0
    num, den = expected_interval(state)
    x = elapsed * den * SCALE // num - churn.inactivity_start
    relative = churn.inactivity_weight * 100 * x // (x + churn.inactivity_half) if x > 0 else 0
    absolute = churn.recency_weight * 100 * elapsed // (elapsed + churn.recency_half_us)
    return relative + absolute


def other_centi(state: CustomerState, t: int) -> int:
    """Points of every signal but inactivity: constant between deadlines."""
    churn = state.policy.churn
    total = state.trend
    if total < 0:
        total = trend_centi(state, churn)
    if state.complaint_units:
        total += min(churn.complaint_max, state.complaint_units * churn.complaint_weight) * 100
    if state.ticket_dues:
        breached = bisect_right(state.ticket_dues, t)
        if breached:
            total += min(churn.ticket_max, breached * churn.ticket_weight) * 100
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


def level_of(score: int, churn: ChurnPolicy) -> str:
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
    deadline (``until`` must not pass it), so the score is monotone there and a binary
    search over integer microseconds finds the exact instant, the same everywhere.
    """
    need = target_score * 100 - 50 - other_centi(state, after)
    if inactivity_centi(state, until) < need:
        return None
    low, high = after, until  # score(low) < target <= score(high)
    while high - low > 1:
        middle = (low + high) // 2
        if inactivity_centi(state, middle) >= need:
            high = middle
        else:
            low = middle
    return high


def _points(centi: int) -> Decimal:
    return Decimal(centi) / 100


def _days(micros: int) -> Decimal:
    return MONEY_CONTEXT.divide(Decimal(micros), Decimal(DAY_US)).quantize(
        _HUNDREDTH, context=MONEY_CONTEXT
    )


def signal_reasons(state: CustomerState, t: int) -> tuple[Reason, ...]:
    """Every signal that contributes, with its inputs, thresholds and points."""
    policy: Policy = state.policy
    churn = policy.churn
    version = policy.version
    reasons: list[Reason] = []
    centi = inactivity_centi(state, t)
    if centi:
        num, den = expected_interval(state)
        reasons.append(
            Reason(
                rule="churn.inactivity",
                message=(
                    f"{_days(t - state.last_purchase_us)} days since the last purchase, "
                    f"expected interval {_days(num // den)} days"
                ),
                policy_version=version,
                inputs={
                    "last_purchase_at": from_micros(state.last_purchase_us),
                    "days_since_last_purchase": _days(t - state.last_purchase_us),
                    "expected_interval_days": _days(num // den),
                    "purchase_count": state.purchase_count,
                },
                thresholds={
                    "weight": churn.inactivity_weight,
                    "start_intervals": Decimal(churn.inactivity_start) / SCALE,
                    "half_intervals": Decimal(churn.inactivity_half) / SCALE,
                    "prior_interval_days": _days(policy.cadence.prior_interval_us),
                    "prior_weight": policy.cadence.prior_weight,
                    "recency_weight": churn.recency_weight,
                    "recency_half_days": _days(churn.recency_half_us),
                },
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
                thresholds={
                    "weight": churn.trend_weight,
                    "window_days": _days(churn.trend_window_us),
                    "min_prior_revenue": churn.trend_min_prior,
                },
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
                thresholds={
                    "weight_each": churn.complaint_weight,
                    "max": churn.complaint_max,
                    "window_days": _days(churn.complaint_window_us),
                },
                event_ids=tuple(item[2] for item in state.complaints),
                points=_points(centi),
            )
        )
    breached = [ticket for ticket in state.tickets.values() if ticket[0] <= t]
    if breached:
        centi = min(churn.ticket_max, len(breached) * churn.ticket_weight) * 100
        reasons.append(
            Reason(
                rule="churn.tickets_past_sla",
                message=f"{len(breached)} open tickets past their SLA",
                policy_version=version,
                inputs={"breached": len(breached), "open": len(state.tickets)},
                thresholds={
                    "weight_each": churn.ticket_weight,
                    "max": churn.ticket_max,
                    "sla_hours": {k: v // 3_600_000_000 for k, v in churn.ticket_sla_us.items()},
                },
                event_ids=tuple(ticket[2] for ticket in breached),
                points=_points(centi),
            )
        )
    if state.survey is not None and state.survey[1] <= churn.nps_detractor_max:
        reasons.append(
            Reason(
                rule="churn.nps_detractor",
                message=f"latest survey score {state.survey[1]}",
                policy_version=version,
                inputs={"score": state.survey[1]},
                thresholds={
                    "weight": churn.nps_weight,
                    "detractor_max_score": churn.nps_detractor_max,
                    "window_days": _days(churn.nps_window_us),
                },
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
                thresholds={
                    "weight_each": churn.payment_weight,
                    "max": churn.payment_max,
                    "window_days": _days(churn.payment_window_us),
                },
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
                thresholds={
                    "weight": churn.cancel_weight,
                    "window_days": _days(churn.cancel_window_us),
                },
                event_ids=(state.cancel_id,),
                points=_points(churn.cancel_weight * 100),
            )
        )
    return tuple(reasons)


def days(micros: int) -> Decimal:
    """Microseconds as days with two decimals, for explanations."""
    return _days(micros)
