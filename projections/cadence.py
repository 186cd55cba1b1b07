"""The customer's own purchase cadence: the interval the churn score measures inactivity in
and the lifecycle's inactivity limits derive from.

Pure functions of the policy and the purchase counts, so the state can cache them and
refresh them only when a purchase changes them (`CustomerState.refresh_cadence`).
"""

from __future__ import annotations

from projections.policy import Policy
from projections.signals import SCALE


def cadence_of(policy: Policy, purchase_count: int, span_us: int) -> tuple[int, int]:
    """The expected purchase interval as an exact fraction ``(num_us, den)``.

    The mean of the customer's own intervals (``span_us``: first to last purchase),
    blended with the population prior worth ``prior_weight`` intervals, so one or two
    purchases do not define a cadence.
    """
    cadence = policy.cadence
    return (
        cadence.prior_weight * cadence.prior_interval_us + (span_us if purchase_count >= 2 else 0),
        cadence.prior_weight + max(purchase_count - 1, 0),
    )


def allowances_of(policy: Policy, interval: tuple[int, int]) -> tuple[int, int]:
    """(at risk after, churned after) in microseconds of inactivity, for an interval."""
    life = policy.lifecycle
    num, den = interval
    at_risk = -(-life.at_risk_after_intervals * num // (den * SCALE))
    churned = -(-life.churned_after_intervals * num // (den * SCALE))
    return max(life.at_risk_min_us, at_risk), max(life.churned_min_us, churned)
