"""The churn score: a probability of churn from named signals, in exact integer arithmetic.

The score is 100 times the probability that the customer makes no purchase or renewal
within the policy's horizon, rounded. It comes from a logistic model whose weights a
calibration fits on the store's own history (``eventcrm calibrate``): the log-odds are an
intercept plus one piecewise-linear curve per signal (:mod:`projections.signals`). Here
the model is only *evaluated*, in integers (log-odds in millionths, the probability cut
points precomputed per policy), so the score is the same on every machine.

Only the time signals (recency and recency relative to the customer's own cadence) grow
between deadlines, and their curves never fall; every other signal is constant until an
event or a deadline. So between deadlines the score only rises, and the first instant it
reaches a level is well defined to the microsecond (:func:`crossing`): that instant is a
deadline, and live timers and replays agree on it.

Each signal's contribution is a reason. Contributions are log-odds; the reasons state them
as score points by sharing the difference between the score and the typical customer's
score in proportion to them, so the points of the reasons (the typical customer's score
included) add up to the score, and a signal that raises the risk never shows as lowering it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final

from projections.model import Reason, from_micros
from projections.policy import MONEY_CONTEXT, SCORE_STEPS, ChurnPolicy, Curve, Policy
from projections.signals import DAY_US, SCALE, SIGNALS, UNIT_SCALE, ChurnInputs
from projections.state import CustomerState
from projections.vocabulary import ChurnLevel

assert SCORE_STEPS == 10  # as_points writes steps as tenths
_HUNDREDTH: Final = Decimal("0.01")
_MILLIONTH: Final = Decimal("0.000001")


def expected_interval(state: CustomerState) -> tuple[int, int]:
    """The customer's expected purchase interval as an exact fraction ``(num_us, den)``
    (cached in the state, see :func:`projections.cadence.cadence_of`)."""
    return state.interval


# --- the signals ---------------------------------------------------------------------


def scored(state: CustomerState) -> bool:
    """Only customers who bought or subscribed can churn; prospects score 0."""
    return state.last_commerce_us is not None


def inputs_at(state: CustomerState, t: int) -> ChurnInputs | None:
    """Every signal's raw value at ``t`` (None for a customer not scored)."""
    last = state.last_commerce_us
    if last is None:
        return None
    churn = state.policy.churn
    recency, relative = _elapsed(state, t)
    survey = state.survey
    return ChurnInputs(
        recency=recency,
        relative_recency=relative,
        frequency=state.purchase_days,
        monetary=_cents(state.win_revenue),
        tenure=last - (state.first_commerce_us or last),
        cadence=state.interval[0] // state.interval[1],
        spend_trend=spend_drop(state, churn),
        complaints=state.complaint_units,
        tickets_past_sla=bisect_right(state.ticket_dues, t),
        nps_detractor=int(survey is not None and survey[1] <= churn.nps_detractor_max),
        payment_failures=len(state.payments),
        cancellation=int(state.cancel_until is not None),
        subscription=int(bool(state.subs)),
    )


def _elapsed(state: CustomerState, t: int) -> tuple[int, int]:
    """(microseconds, fixed-point intervals) since the last purchase or renewal; both 0
    while a subscription runs (its renewals are the customer's cadence then)."""
    last = state.last_commerce_us
    if last is None or state.subs or t <= last:
        return 0, 0
    elapsed = t - last
    num, den = state.interval
    return elapsed, elapsed * den * SCALE // num


def _cents(amount: Decimal) -> int:
    if amount <= 0:
        return 0
    return int((amount * 100).to_integral_value(rounding=ROUND_FLOOR))


def spend_drop(state: CustomerState, churn: ChurnPolicy) -> int:
    """Share of the earlier half-year's net spend lost in the latest one (fixed point);
    0 when the earlier one was below the noise floor. Cached until either sum moves."""
    if state.trend >= 0:
        return state.trend
    prior, recent = state.prior_sum, state.recent_sum
    drop = 0
    if prior > 0 and prior >= churn.trend_min_prior and recent < prior:
        share = MONEY_CONTEXT.divide(
            MONEY_CONTEXT.multiply(Decimal(SCALE), prior - max(recent, Decimal(0))), prior
        )
        drop = int(share.to_integral_value(rounding=ROUND_FLOOR))
    state.trend = drop
    return drop


# --- the score -----------------------------------------------------------------------


def static_logit(state: CustomerState, t: int) -> int:
    """Log-odds of every part but the time signals: constant between deadlines.

    All but the tickets past SLA (counted at ``t``) are cached in the state
    (``static_base``) until an event or a window edge moves one of them.
    """
    churn = state.policy.churn
    base = state.static_base
    if base is None:
        base = state.static_base = _static_base(state, churn)
    return base + churn.tickets.value(bisect_right(state.ticket_dues, t))


def _static_base(state: CustomerState, churn: ChurnPolicy) -> int:
    inputs = inputs_at(state, state.clock or 0)
    if inputs is None:
        return 0
    total = churn.intercept
    for index, curve in churn.constant:
        total += curve.value(inputs[index])
    return total


def time_logit(state: CustomerState, t: int) -> int:
    """Log-odds of the time signals at ``t``: they only grow until the next event."""
    elapsed, relative = _elapsed(state, t)
    churn = state.policy.churn
    return churn.recency.value(elapsed) + churn.relative.value(relative)


def score_of(logit: int, churn: ChurnPolicy) -> int:
    """The probability of churn within the horizon, in score steps (``SCORE_STEPS`` per
    percentage point), rounded: 0 to 1,000."""
    return bisect_right(churn.cuts, logit)


def as_points(steps: int) -> Decimal:
    """Score steps as points with one decimal (0.0–100.0): what users read."""
    return Decimal(steps).scaleb(-1)  # SCORE_STEPS is 10 (asserted below)


def score_at(state: CustomerState, t: int) -> int:
    """The score at ``t`` in steps (0 for a customer who never bought)."""
    if state.last_commerce_us is None:
        return 0
    return score_of(static_logit(state, t) + time_logit(state, t), state.policy.churn)


def score_steps(policy: Policy, inputs: ChurnInputs) -> int:
    """The score (steps) of a customer with these signal values: what the fold computes,
    from the inputs alone (calibration and backtests score their rows with it)."""
    churn = policy.churn
    total = churn.intercept
    for spec, value in zip(SIGNALS, inputs, strict=True):
        total += churn.curves[spec.name].value(value)
    return score_of(total, churn)


def churn_score(policy: Policy, inputs: ChurnInputs) -> Decimal:
    """:func:`score_steps` in points (0.0–100.0)."""
    return as_points(score_steps(policy, inputs))


def level_of(score: int, churn: ChurnPolicy) -> ChurnLevel:
    if score >= churn.critical:
        return "critical"
    if score >= churn.warning:
        return "warning"
    if score >= churn.watch:
        return "watch"
    return "none"


def crossing(state: CustomerState, after: int, until: int, target_score: int) -> int | None:
    """The first instant in ``(after, until]`` at which the score reaches the target (steps).

    Only the time signals move before the next deadline (``until`` must not pass it) and
    their curves never fall, so the score is monotone there and its first instant at or
    over the target is well defined, to the microsecond; found by bisection over integer
    microseconds (at most ~60 evaluations of two curves).
    """
    need = state.policy.churn.cuts[target_score - 1] - static_logit(state, after)
    if time_logit(state, until) < need:
        return None
    low, high = after, until  # time_logit(low) < need <= time_logit(high), or low = after
    if time_logit(state, low + 1) >= need:
        return low + 1
    low += 1
    while high - low > 1:
        middle = (low + high) // 2
        if time_logit(state, middle) >= need:
            high = middle
        else:
            low = middle
    return high


# --- explanations --------------------------------------------------------------------


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


def days(micros: int) -> Decimal:
    """Microseconds as days with two decimals, for explanations."""
    return _days(micros)


def _natural(name: str, raw: int) -> Decimal:
    unit = next(spec.unit for spec in SIGNALS if spec.name == name)
    scale = UNIT_SCALE[unit]
    if unit == "days":
        return _days(raw)
    if scale == 1:
        return Decimal(raw)
    return (
        (Decimal(raw) / scale).quantize(_HUNDREDTH if unit == "money" else _MILLIONTH).normalize()
    )


_FIXED: dict[int, tuple[Policy, dict[str, Mapping[str, Any]]]] = {}
_FIXED_MAX: Final = 16


def fixed_thresholds(policy: Policy) -> dict[str, Mapping[str, Any]]:
    """The constant thresholds of each reason (churn signals, alert, and the constant part
    of tier and lifecycle): built once per policy and shared by every reason that names
    them (read-only by contract, like the reasons; tier and lifecycle copy theirs)."""
    known = _FIXED.get(id(policy))
    if known is not None and known[0] is policy:
        return known[1]
    churn = policy.churn
    fixed: dict[str, Mapping[str, Any]] = {
        name: {
            "at": list(curve.knots_natural),
            "logit": [Decimal(v).scaleb(-6) for v in curve.logit],
            "typical": curve.typical,
        }
        for name, curve in churn.curves.items()
    }
    fixed["inactivity"] = {
        "recency": fixed["recency"],
        "relative_recency": fixed["relative_recency"],
        "prior_interval_days": _days(policy.cadence.prior_interval_us),
        "prior_weight": policy.cadence.prior_weight,
    }
    fixed["base"] = {
        "intercept": Decimal(churn.intercept).scaleb(-6),
        "horizon_days": _days(churn.horizon_us),
    }
    fixed["tier"] = {
        "window_days": _days(policy.tier.window_us),
        "downgrade_margin": policy.tier.revenue_margin,
        "purchase_margin": policy.tier.purchase_margin,
        "grace_days": _days(policy.tier.grace_us),
    }
    fixed["lifecycle"] = {
        "active_min_purchases": policy.lifecycle.active_min_purchases,
        "loyal_min_purchases": policy.lifecycle.loyal_min_purchases,
        "loyal_min_tenure_days": _days(policy.lifecycle.loyal_min_tenure_us),
    }
    fixed["alert"] = {
        "watch": as_points(churn.watch),
        "warning": as_points(churn.warning),
        "critical": as_points(churn.critical),
        "resolve_below": as_points(churn.warning - churn.resolve_margin),
        "horizon_days": _days(churn.horizon_us),
    }
    if len(_FIXED) >= _FIXED_MAX:
        _FIXED.clear()
    _FIXED[id(policy)] = (policy, fixed)
    return fixed


def _share(points: int, contributions: list[int]) -> list[int]:
    """Split ``points`` (hundredths) in proportion to ``contributions`` (log-odds), so the
    parts add up exactly and each part keeps the sign of its contribution."""
    total = sum(contributions)
    if not points or not total:
        return [0] * len(contributions)
    parts = [points * c // total for c in contributions]
    rest = points - sum(parts)
    if rest and contributions:
        same = [i for i, c in enumerate(contributions) if (c > 0) == (points > 0) and c]
        pool = same or list(range(len(contributions)))
        largest = max(pool, key=lambda i: abs(contributions[i]))
        parts[largest] += rest
    return parts


def signal_reasons(state: CustomerState, t: int) -> tuple[Reason, ...]:
    """The typical customer's risk, then every signal that moves this customer away from
    it, with its value, its log-odds and its share of the score in points."""
    inputs = inputs_at(state, t)
    if inputs is None:
        return ()
    policy: Policy = state.policy
    churn = policy.churn
    fixed = fixed_thresholds(policy)
    values = dict(zip(inputs._fields, inputs, strict=True))
    logits = {name: churn.curves[name].value(raw) for name, raw in values.items()}
    items: list[tuple[str, int]] = [("inactivity", logits["recency"] + logits["relative_recency"])]
    items += [(name, logit) for name, logit in logits.items()
              if name not in ("recency", "relative_recency")]  # fmt: skip
    items = [(name, logit) for name, logit in items if logit]
    base = score_of(churn.intercept, churn)
    score = score_of(churn.intercept + sum(logits.values()), churn)
    shares = _share((score - base) * (100 // SCORE_STEPS), [logit for _, logit in items])
    horizon = _days(churn.horizon_us)
    reasons = [
        Reason(
            rule="churn.base",
            message=f"a typical customer: {as_points(base)}% chance of no purchase or renewal "
            f"within {horizon:f} days",
            policy_version=policy.version,
            inputs={"score": as_points(base)},
            thresholds=fixed["base"],
            points=as_points(base),
        )
    ]
    for (name, logit), share in zip(items, shares, strict=True):
        message, inputs_shown, ids = _describe(state, name, values, t)
        reasons.append(
            Reason(
                rule=f"churn.{name}",
                message=message,
                policy_version=policy.version,
                inputs={**inputs_shown, "logit": Decimal(logit).scaleb(-6)},
                thresholds=fixed[name],
                event_ids=ids,
                points=Decimal(share).scaleb(-2),
            )
        )
    return tuple(reasons)


def _describe(
    state: CustomerState, name: str, values: Mapping[str, int], t: int
) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """(message, inputs, event ids) of one signal's reason."""
    curve: Curve = state.policy.churn.curves.get(name) or state.policy.churn.recency
    value = _natural(name, values[name]) if name in values else Decimal(0)
    shown: dict[str, Any] = {"value": value, "typical": curve.typical}
    if name == "inactivity":
        num, den = expected_interval(state)
        idle, expected = _days(values["recency"]), _days(num // den)
        intervals = _natural("relative_recency", values["relative_recency"])
        last = state.last_commerce_us or 0
        return (
            f"{idle} days since the last purchase or renewal, {intervals} expected "
            f"intervals of {expected} days",
            {
                "last_commerce_at": from_micros(last),
                "days_since_last_commerce": idle,
                "expected_interval_days": expected,
                "intervals": intervals,
                "typical_days": state.policy.churn.recency.typical,
            },
            (state.last_commerce_id,),
        )
    if name == "tickets_past_sla":
        shown |= {"breached": values[name], "open": len(state.tickets)}
    return _message(state, name, value, curve, values), shown, _event_ids(state, name, t)


def _message(  # noqa: PLR0911 - one sentence per signal, only the one asked for
    state: CustomerState, name: str, value: Decimal, curve: Curve, values: Mapping[str, int]
) -> str:
    """The sentence of one signal's reason (only the one asked for is formatted: a
    snapshot describes every signal of the customer)."""
    if name == "frequency":
        return f"{value} days with a purchase (typical {curve.typical})"
    if name == "monetary":
        base = state.policy.base_currency
        return f"{value} {base} net revenue in the tier window (typical {curve.typical})"
    if name == "tenure":
        return (
            f"{value} days from the first to the latest purchase or renewal "
            f"(typical {curve.typical})"
        )
    if name == "cadence":
        return f"expected interval {value} days (typical {curve.typical})"
    if name == "spend_trend":
        return (
            f"net spend fell from {state.prior_sum} to {state.recent_sum} "
            f"({(value * 100).quantize(Decimal(1))}% lost)"
        )
    if name == "complaints":
        return f"{len(state.complaints)} complaints in the window"
    if name == "tickets_past_sla":
        return f"{values['tickets_past_sla']} open tickets past their SLA"
    if name == "nps_detractor":
        return f"latest survey score {state.survey[1] if state.survey else '-'}"
    if name == "payment_failures":
        return f"{len(state.payments)} failed payments in the window"
    if name == "cancellation":
        return "a subscription was cancelled and not restarted"
    if name == "subscription":
        return "an active subscription"
    raise KeyError(name)


def _event_ids(state: CustomerState, name: str, t: int) -> tuple[str, ...]:
    """The events one signal's reason names."""
    ids: tuple[str, ...] = ()
    if name == "complaints":
        ids = tuple(item[2] for item in state.complaints)
    elif name == "tickets_past_sla":
        ids = tuple(ticket[2] for ticket in state.tickets.values() if ticket[0] <= t)
    elif name == "nps_detractor" and state.survey is not None:
        ids = (state.survey[2],)
    elif name == "payment_failures":
        ids = tuple(item[1] for item in state.payments)
    elif name == "cancellation":
        ids = (state.cancel_id,)
    elif name == "frequency":
        ids = (state.last_purchase_id,) if state.last_purchase_id else ()
    return ids


def breached_tickets(state: CustomerState, t: int) -> int:
    """Open tickets whose SLA instant is at or before ``t``."""
    return bisect_right(state.ticket_dues, t)
