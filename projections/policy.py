"""The projection policy: every threshold, window and weight, versioned and validated.

The numbers that decide a customer's tier, stage and alerts are business decisions,
so they live in a TOML file (``default_policy.toml`` is the packaged default) rather
than in code. Every output names the policy ``version`` so an auditor can tell which
rules produced it. Loading is strict: an unknown key is a typo that would otherwise
silently keep a default, so it is refused like a bad value, and every error names the
key path (``tier.levels[1].min_revenue: must be >= 0``).

The caller reads the file (I/O is not this package's business) and hands the text in.
"""

from __future__ import annotations

import tomllib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Context, Decimal, InvalidOperation, localcontext
from itertools import pairwise
from typing import Any, Final

from domain.currencies import MINOR_UNITS
from projections.model import to_micros
from projections.signals import DAY_US, SCALE, SIGNALS, UNIT_SCALE, SignalSpec
from projections.vocabulary import NO_TIER, TIERS, Tier

DEFAULT_POLICY_RESOURCE: Final = "default_policy.toml"
"""Package-data name of the default policy inside ``projections``."""

HOUR_US: Final = 3_600_000_000
LOGIT_SCALE: Final = 1_000_000
"""Log-odds are integers in millionths: the score is exact and the same everywhere."""
SCORE_STEPS: Final = 10
"""Score steps per point: the score is a percentage with one decimal (0.0–100.0), fine
enough to set alert levels for a budget where most customers' risks are close."""

MONEY_CONTEXT: Final = Context(prec=60)
"""Explicit decimal context: results never depend on a thread's ambient context."""

TICKET_PRIORITIES: Final = ("urgent", "high", "normal", "low")


class PolicyError(ValueError):
    """The policy text is not valid; the message starts with the offending key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True, slots=True)
class TierLevel:
    name: Tier
    min_revenue: Decimal
    min_purchases: int


@dataclass(frozen=True, slots=True)
class TierPolicy:
    window_us: int
    grace_us: int
    revenue_margin: Decimal
    purchase_margin: int
    levels: tuple[TierLevel, ...]
    """Highest first; a customer meeting none of them is in tier ``none``."""


@dataclass(frozen=True, slots=True)
class CadencePolicy:
    prior_interval_us: int
    prior_weight: int


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    active_min_purchases: int
    loyal_min_purchases: int
    loyal_min_tenure_us: int
    at_risk_after_intervals: int  # scaled by SCALE
    at_risk_min_us: int
    churned_after_intervals: int  # scaled by SCALE
    churned_min_us: int
    reactivated_confirm_purchases: int
    subscription_lapse_us: int


@dataclass(frozen=True, slots=True)
class Curve:
    """A signal's contribution to the log-odds of churn: linear between its knots, flat
    beyond them. Knots are raw units (``projections.signals.UNIT_SCALE``), log-odds
    millionths; interpolation floors, so a rising curve gives a rising integer function
    (what the exact crossing solver needs)."""

    at: tuple[int, ...]
    logit: tuple[int, ...]
    knots_natural: tuple[Decimal, ...]
    typical: Decimal
    """The value a typical customer had when the curve was fitted (it reads 0 there)."""

    def value(self, x: int) -> int:
        at, logit = self.at, self.logit
        if x <= at[0]:
            return logit[0]
        if x >= at[-1]:
            return logit[-1]
        i = bisect_right(at, x) - 1
        x0, y0 = at[i], logit[i]
        return y0 + (logit[i + 1] - y0) * (x - x0) // (at[i + 1] - x0)


@dataclass(frozen=True, slots=True)
class ChurnPolicy:
    """The churn model: log-odds = ``intercept`` + one curve per signal; score = 100 x the
    probability of no purchase or renewal within ``horizon``, rounded (``cuts``)."""

    horizon_us: int
    intercept: int
    curves: Mapping[str, Curve]
    constant: tuple[tuple[int, Curve], ...]
    """(index in ``ChurnInputs``, curve) of the signals constant between deadlines."""
    recency: Curve
    relative: Curve
    tickets: Curve
    cuts: tuple[int, ...]
    """``cuts[k - 1]``: the least log-odds whose score is ``k`` steps or more."""
    watch: int
    warning: int
    critical: int
    resolve_margin: int
    """Levels and the margin in score steps (``SCORE_STEPS`` per point)."""
    trend_window_us: int
    trend_min_prior: Decimal
    complaint_window_us: int
    complaint_high_factor: int
    ticket_sla_us: Mapping[str, int]
    nps_detractor_max: int
    nps_window_us: int
    payment_window_us: int
    cancel_window_us: int


@dataclass(frozen=True, slots=True)
class FxRate:
    """A dated rate: one unit of the currency is worth ``rate`` units of the base."""

    day_us: int
    day: str
    rate: Decimal


@dataclass(frozen=True, slots=True)
class Conversion:
    """An amount in the base currency, or None when the table cannot convert it."""

    amount: Decimal | None
    rate: Decimal | None
    rate_date: str | None
    note: str | None
    """Set when the rate was not from the event's own date range (fallback) or missing."""


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    base_currency: str
    tier: TierPolicy
    cadence: CadencePolicy
    lifecycle: LifecyclePolicy
    churn: ChurnPolicy
    fx: Mapping[str, tuple[FxRate, ...]]
    calibration: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The training report of a calibrated policy (informative, never read by the fold)."""
    fx_days: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    """The ``day_us`` of each currency's rates (derived from ``fx``, for bisection)."""

    def __post_init__(self) -> None:
        days = {
            currency: tuple(rate.day_us for rate in rates) for currency, rates in self.fx.items()
        }
        object.__setattr__(self, "fx_days", days)

    def convert(self, amount: Decimal, currency: str, at_us: int) -> Conversion:
        """Convert at the rate in force on the event's date.

        In force = the latest dated rate not after the event; an event older than the
        whole table uses the earliest rate and says so. A currency absent from the
        table cannot be converted: the caller leaves the event out of revenue and
        names it in the reasons rather than guessing or failing mid-fold.
        """
        if currency == self.base_currency:
            return Conversion(amount, Decimal(1), None, None)
        rates = self.fx.get(currency)
        if not rates:
            return Conversion(None, None, None, f"no FX rate for {currency}")
        index = bisect_right(self.fx_days[currency], at_us) - 1
        note = None
        if index < 0:
            index = 0
            note = (
                f"event predates the FX table for {currency}; "
                f"used the earliest rate ({rates[0].day})"
            )
        chosen = rates[index]
        return Conversion(
            MONEY_CONTEXT.multiply(amount, chosen.rate), chosen.rate, chosen.day, note
        )


# --- loading -----------------------------------------------------------------------


def load_policy(text: str) -> Policy:
    """Parse and validate a policy; raises :class:`PolicyError` naming the key path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("", f"not valid TOML: {exc}") from None
    root = _Table(data, "")
    version = root.text("version")
    base = root.currency("base_currency")
    tier = _tier(root.table("tier"))
    cadence = _cadence(root.table("cadence"))
    lifecycle = _lifecycle(root.table("lifecycle"))
    churn = _churn(root.table("churn"), root.table("alert"))
    fx = _fx(root.table("fx"), base)
    calibration = root.data.get("calibration", {})
    root.used.add("calibration")
    if not isinstance(calibration, dict):
        raise PolicyError("calibration", "must be a table")
    root.done()
    return Policy(version, base, tier, cadence, lifecycle, churn, fx, calibration)


class _Table:
    """One TOML table being read: typed getters that know their key path."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise PolicyError(path, "must be a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str) -> Any:
        if name not in self.data:
            raise PolicyError(self.key(name), "is required")
        self.used.add(name)
        return self.data[name]

    def table(self, name: str) -> _Table:
        return _Table(self.raw(name), self.key(name))

    def tables(self, name: str) -> list[_Table]:
        value = self.raw(name)
        if not isinstance(value, list) or not value:
            raise PolicyError(self.key(name), "must be a non-empty array of tables")
        return [_Table(item, f"{self.key(name)}[{i}]") for i, item in enumerate(value)]

    def text(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or not value.strip():
            raise PolicyError(self.key(name), "must be a non-empty string")
        return value

    def currency(self, name: str) -> str:
        value = self.text(name)
        if value not in MINOR_UNITS:
            raise PolicyError(self.key(name), "must be an ISO 4217 currency code")
        return value

    def integer(self, name: str, low: int = 0, high: int | None = None) -> int:
        value = self.raw(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(self.key(name), "must be an integer")
        if value < low:
            raise PolicyError(self.key(name), f"must be >= {low}")
        if high is not None and value > high:
            raise PolicyError(self.key(name), f"must be <= {high}")
        return value

    def decimal(self, name: str, low: Decimal = Decimal(0), high: Decimal | None = None) -> Decimal:
        """Decimals are written as strings ("0.10"): TOML floats would not be exact."""
        value = self.raw(name)
        if not isinstance(value, str):
            raise PolicyError(self.key(name), 'must be a decimal string such as "0.10"')
        return _decimal(value, self.key(name), low, high)

    def scaled(self, name: str, low: Decimal = Decimal(0)) -> int:
        """A ratio as an integer fixed-point number (x SCALE), exact to 6 places."""
        value = self.decimal(name, low)
        scaled = value * SCALE
        if scaled != scaled.to_integral_value():
            raise PolicyError(self.key(name), "must have at most 6 decimal places")
        return int(scaled)

    def points(self, name: str, *, allow_zero: bool = False) -> int:
        """A score in points (0–100, one decimal at most), as score steps."""
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise PolicyError(self.key(name), 'must be a number of points such as 50 or "62.5"')
        number = (
            Decimal(value)
            if isinstance(value, int)
            else _decimal(value, self.key(name), Decimal(0), Decimal(100))
        )
        steps = number * SCORE_STEPS
        if steps != steps.to_integral_value():
            raise PolicyError(self.key(name), "must have at most one decimal place")
        if not (0 if allow_zero else 1) <= steps <= 100 * SCORE_STEPS:
            raise PolicyError(self.key(name), "must be between 0 and 100 points")
        return int(steps)

    def days(self, name: str, low: int = 0) -> int:
        return self.integer(name, low) * DAY_US

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise PolicyError(self.key(unknown[0]), "unknown key")


def _decimal(text: str, path: str, low: Decimal, high: Decimal | None) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PolicyError(path, f"not a decimal: {text!r}") from None
    if not value.is_finite():
        raise PolicyError(path, "must be finite")
    if value < low:
        raise PolicyError(path, f"must be >= {low}")
    if high is not None and value > high:
        raise PolicyError(path, f"must be <= {high}")
    return value


_LEVEL_NAMES: Final[tuple[Tier, ...]] = tuple(name for name in TIERS if name != NO_TIER)
"""The names a policy may give its levels, highest first."""


def _tier_name(name: str) -> Tier | None:
    for tier in _LEVEL_NAMES:
        if tier == name:
            return tier
    return None


def _tier(table: _Table) -> TierPolicy:
    levels: list[TierLevel] = []
    for level in table.tables("levels"):
        name = level.text("name")
        if name == NO_TIER:
            raise PolicyError(level.key("name"), '"none" is reserved for no tier')
        tier = _tier_name(name)
        if tier is None:
            raise PolicyError(level.key("name"), f"must be one of {', '.join(_LEVEL_NAMES)}")
        if levels and _LEVEL_NAMES.index(tier) <= _LEVEL_NAMES.index(levels[-1].name):
            raise PolicyError(
                level.key("name"), f"levels must be named in the order {', '.join(_LEVEL_NAMES)}"
            )
        levels.append(
            TierLevel(tier, level.decimal("min_revenue"), level.integer("min_purchases", 1))
        )
        level.done()
    for i in range(1, len(levels)):
        higher, lower = levels[i - 1], levels[i]
        if lower.min_revenue > higher.min_revenue or lower.min_purchases > higher.min_purchases:
            raise PolicyError(
                f"{table.key('levels')}[{i}]",
                "levels must be ordered highest first (thresholds not increasing)",
            )
    if len({level.name for level in levels}) != len(levels):
        raise PolicyError(table.key("levels"), "tier names must be unique")
    policy = TierPolicy(
        window_us=table.days("window_days", 1),
        grace_us=table.days("downgrade_grace_days"),
        revenue_margin=table.decimal("downgrade_margin", high=Decimal(1)),
        purchase_margin=table.integer("purchase_margin"),
        levels=tuple(levels),
    )
    table.done()
    return policy


def _cadence(table: _Table) -> CadencePolicy:
    policy = CadencePolicy(table.days("prior_interval_days", 1), table.integer("prior_weight", 1))
    table.done()
    return policy


def _lifecycle(table: _Table) -> LifecyclePolicy:
    policy = LifecyclePolicy(
        active_min_purchases=table.integer("active_min_purchases", 2),
        loyal_min_purchases=table.integer("loyal_min_purchases", 2),
        loyal_min_tenure_us=table.days("loyal_min_tenure_days"),
        at_risk_after_intervals=table.scaled("at_risk_after_intervals", Decimal(1)),
        at_risk_min_us=table.days("at_risk_min_days", 1),
        churned_after_intervals=table.scaled("churned_after_intervals", Decimal(1)),
        churned_min_us=table.days("churned_min_days", 1),
        reactivated_confirm_purchases=table.integer("reactivated_confirm_purchases", 1),
        subscription_lapse_us=table.days("subscription_lapse_days", 1),
    )
    if policy.churned_after_intervals <= policy.at_risk_after_intervals:
        raise PolicyError(
            table.key("churned_after_intervals"), "must be greater than at_risk_after_intervals"
        )
    if policy.churned_min_us <= policy.at_risk_min_us:
        raise PolicyError(table.key("churned_min_days"), "must be greater than at_risk_min_days")
    if policy.loyal_min_purchases < policy.active_min_purchases:
        raise PolicyError(table.key("loyal_min_purchases"), "must be >= active_min_purchases")
    table.done()
    return policy


def _churn(table: _Table, alert: _Table) -> ChurnPolicy:
    levels = table.table("levels")
    watch = levels.points("watch")
    warning = levels.points("warning")
    critical = levels.points("critical")
    levels.done()
    if not watch < warning < critical:
        raise PolicyError(levels.path, "must satisfy watch < warning < critical")
    signals = table.table("signals")
    tables = {spec.name: signals.table(spec.name) for spec in SIGNALS}
    curves = {spec.name: _curve(tables[spec.name], spec) for spec in SIGNALS}
    trend, complaints, tickets = (
        tables["spend_trend"],
        tables["complaints"],
        tables["tickets_past_sla"],
    )
    sla = tickets.table("sla_hours")
    sla_us = {name: sla.integer(name, 1) * HOUR_US for name in TICKET_PRIORITIES}
    sla.done()
    nps, payments, cancel = (
        tables["nps_detractor"],
        tables["payment_failures"],
        tables["cancellation"],
    )
    fixed = {"recency", "relative_recency", "tickets_past_sla"}
    policy = ChurnPolicy(
        horizon_us=table.days("horizon_days", 1),
        intercept=_logit(table.raw("intercept"), table.key("intercept")),
        curves=curves,
        constant=tuple(
            (n, curves[spec.name]) for n, spec in enumerate(SIGNALS) if spec.name not in fixed
        ),
        recency=curves["recency"],
        relative=curves["relative_recency"],
        tickets=curves["tickets_past_sla"],
        cuts=_SCORE_CUTS,
        watch=watch,
        warning=warning,
        critical=critical,
        resolve_margin=alert.points("resolve_margin", allow_zero=True),
        trend_window_us=trend.days("window_days", 1),
        trend_min_prior=trend.decimal("min_prior_revenue"),
        complaint_window_us=complaints.days("window_days", 1),
        complaint_high_factor=complaints.integer("high_severity_factor", 1, 10),
        ticket_sla_us=sla_us,
        nps_detractor_max=nps.integer("detractor_max_score", 0, 10),
        nps_window_us=nps.days("window_days", 1),
        payment_window_us=payments.days("window_days", 1),
        cancel_window_us=cancel.days("window_days", 1),
    )
    if policy.resolve_margin >= warning:
        raise PolicyError(alert.key("resolve_margin"), "must be smaller than churn.levels.warning")
    for sub in (*tables.values(), signals, table, alert):
        sub.done()
    return policy


def _score_cuts() -> tuple[int, ...]:
    """``cuts[k - 1]``: the least log-odds (millionths) at which the probability, rounded
    to score steps, is k steps or more: ``ceil(ln(p / (1 - p)))`` for
    ``p = (k - 0.5) / (100 * SCORE_STEPS)``. Computed with the decimal module, whose ``ln``
    is correctly rounded: the same integers everywhere."""
    cuts = []
    steps = 100 * SCORE_STEPS
    with localcontext(Context(prec=40)) as context:
        for k in range(1, steps + 1):
            p = (Decimal(k) - Decimal("0.5")) / steps
            logit = (p / (1 - p)).ln(context) * LOGIT_SCALE
            cuts.append(int(logit.to_integral_value(rounding=ROUND_CEILING)))
    return tuple(cuts)


_SCORE_CUTS: Final = _score_cuts()


def _logit(value: object, path: str) -> int:
    if not isinstance(value, str):
        raise PolicyError(path, 'must be a decimal string such as "-0.25"')
    number = _decimal(value, path, Decimal("-1000"), Decimal("1000"))
    scaled = number * LOGIT_SCALE
    if scaled != scaled.to_integral_value():
        raise PolicyError(path, "must have at most 6 decimal places")
    return int(scaled)


def _knot(value: object, path: str, spec: SignalSpec) -> tuple[int, Decimal]:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PolicyError(path, 'must be an integer or a decimal string such as "0.5"')
    number = Decimal(value) if isinstance(value, int) else _decimal(value, path, Decimal(0), None)
    if number < 0:
        raise PolicyError(path, "must be >= 0")
    raw = number * UNIT_SCALE[spec.unit]
    if raw != raw.to_integral_value():
        raise PolicyError(path, f"is finer than the {spec.unit} unit allows")
    return int(raw), number


def _curve(table: _Table, spec: SignalSpec) -> Curve:
    """``at`` (knots, natural units, increasing), ``logit`` (one per knot), ``typical``."""
    at_values = table.raw("at")
    logit_values = table.raw("logit")
    if not isinstance(at_values, list) or len(at_values) < 2:
        raise PolicyError(table.key("at"), "must be a list of at least two knots")
    if not isinstance(logit_values, list) or len(logit_values) != len(at_values):
        raise PolicyError(table.key("logit"), "must have one value per knot in `at`")
    knots = [_knot(v, f"{table.key('at')}[{i}]", spec) for i, v in enumerate(at_values)]
    logits = [_logit(v, f"{table.key('logit')}[{i}]") for i, v in enumerate(logit_values)]
    if any(b[0] <= a[0] for a, b in pairwise(knots)):
        raise PolicyError(table.key("at"), "knots must be strictly increasing")
    steps = [b - a for a, b in pairwise(logits)]
    if spec.direction == "up" and any(step < 0 for step in steps):
        raise PolicyError(
            table.key("logit"), f"{spec.name} may only raise the risk: values must not decrease"
        )
    if spec.direction == "down" and any(step > 0 for step in steps):
        raise PolicyError(
            table.key("logit"), f"{spec.name} may only lower the risk: values must not increase"
        )
    typical = table.decimal("typical") if "typical" in table.data else knots[0][1]
    return Curve(tuple(k[0] for k in knots), tuple(logits), tuple(k[1] for k in knots), typical)


def _fx(table: _Table, base: str) -> dict[str, tuple[FxRate, ...]]:
    fx: dict[str, tuple[FxRate, ...]] = {}
    for currency in sorted(table.data):
        path = table.key(currency)
        if currency not in MINOR_UNITS:
            raise PolicyError(path, "not an ISO 4217 currency code")
        if currency == base:
            raise PolicyError(path, "the base currency needs no rates (it is 1 by definition)")
        rates = table.table(currency)
        entries = []
        for day in sorted(rates.data):
            rate_path = rates.key(f'"{day}"')
            try:
                parsed = date.fromisoformat(day)
            except ValueError:
                raise PolicyError(rate_path, "keys must be dates such as 2015-01-01") from None
            value = rates.raw(day)
            if not isinstance(value, str):
                raise PolicyError(rate_path, 'must be a decimal string such as "1.10"')
            rate = _decimal(value, rate_path, Decimal(0), None)
            if rate == 0:
                raise PolicyError(rate_path, "must be > 0")
            instant = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
            entries.append(FxRate(to_micros(instant), day, rate))
        if not entries:
            raise PolicyError(path, "needs at least one dated rate")
        fx[currency] = tuple(entries)
    return fx
