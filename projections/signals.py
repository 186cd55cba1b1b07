"""The churn signals: what the churn model looks at, in which unit, and which way it may go.

One list, read by the policy loader (curve validation), the fold (evaluation) and the
calibration (the fit), so the three always mean the same thing by a signal. Values are
exact integers in a raw unit (microseconds, cents, fixed-point ratios) and read in a
natural unit (days, the base currency, fractions) in policy files and reasons.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Unit = Literal["days", "intervals", "count", "money", "fraction", "flag"]
Direction = Literal["up", "down", "free"]

DAY_US: Final = 86_400_000_000
SCALE: Final = 1_000_000
"""Fixed-point scale for ratios (intervals, fractions): integer math, same result everywhere."""

UNIT_SCALE: Final[dict[Unit, int]] = {
    "days": DAY_US,
    "intervals": SCALE,
    "count": 1,
    "money": 100,
    "fraction": SCALE,
    "flag": 1,
}
"""Raw units per natural unit: a policy's ``at = [30]`` days is 30 * DAY_US raw."""


class SignalSpec(NamedTuple):
    name: str
    unit: Unit
    direction: Direction
    """``up``: the curve may never fall (more of it never lowers the risk); ``down``: never
    rise; ``free``: learned as the data says."""
    time_varying: bool
    """Grows with time between events (the crossing solver relies on ``up`` for these)."""
    knots: tuple[str, ...]
    """Default knots (natural units) for a calibration that has no curve to start from."""
    title: str


SIGNALS: Final = (
    SignalSpec("recency", "days", "up", True,
               ("0", "7", "14", "30", "60", "90", "120", "180", "270", "365", "730"),
               "days since the last purchase or renewal (0 while a subscription runs)"),
    SignalSpec("relative_recency", "intervals", "up", True,
               ("0", "0.5", "1", "1.5", "2", "3", "4", "6", "10"),
               "days since the last purchase or renewal, in the customer's expected intervals"),
    SignalSpec("frequency", "count", "free", False,
               ("0", "1", "2", "3", "4", "6", "10", "20", "50"),
               "distinct days with a purchase"),
    SignalSpec("monetary", "money", "free", False,
               ("0", "25", "50", "100", "250", "500", "1000", "2500", "10000"),
               "net revenue in the tier window, base currency"),
    SignalSpec("tenure", "days", "free", False,
               ("0", "30", "90", "180", "365", "730", "1460"),
               "days from the first to the latest purchase or renewal"),
    SignalSpec("cadence", "days", "free", False,
               ("1", "7", "14", "30", "60", "90", "180", "365"),
               "expected days between purchases (own intervals blended with the prior)"),
    SignalSpec("spend_trend", "fraction", "up", False,
               ("0", "0.25", "0.5", "0.75", "1"),
               "share of the earlier half-year's net spend lost in the latest one"),
    SignalSpec("complaints", "count", "up", False, ("0", "1", "2", "4"),
               "complaints in the window (high severity counted more)"),
    SignalSpec("tickets_past_sla", "count", "up", False, ("0", "1", "2", "4"),
               "open support tickets past their SLA"),
    SignalSpec("nps_detractor", "flag", "up", False, ("0", "1"),
               "latest survey answer in the window is a detractor's"),
    SignalSpec("payment_failures", "count", "up", False, ("0", "1", "2", "4"),
               "failed payments in the window"),
    SignalSpec("cancellation", "flag", "up", False, ("0", "1"),
               "a subscription cancelled in the window and not restarted"),
    SignalSpec("subscription", "flag", "free", False, ("0", "1"),
               "an active subscription"),
)  # fmt: skip

SIGNAL_NAMES: Final = tuple(spec.name for spec in SIGNALS)
SIGNAL_BY_NAME: Final = {spec.name: spec for spec in SIGNALS}


class ChurnInputs(NamedTuple):
    """The signals' raw values for one customer at one instant (units: ``UNIT_SCALE``)."""

    recency: int
    relative_recency: int
    frequency: int
    monetary: int
    tenure: int
    cadence: int
    spend_trend: int
    complaints: int
    tickets_past_sla: int
    nps_detractor: int
    payment_failures: int
    cancellation: int
    subscription: int


assert ChurnInputs._fields == SIGNAL_NAMES  # one order, defined once
