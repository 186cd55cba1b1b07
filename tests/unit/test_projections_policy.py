"""The policy file: strict validation naming the key, FX conversion by date."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from infra.bootstrap import default_policy_text
from projections import PolicyError, fold, load_policy, snapshot
from projections.model import to_micros
from tests.unit.quality.policies import simple_policy_text
from tests.unit.quality.simulate import at, purchase

DEFAULT = default_policy_text()


def test_the_packaged_default_policy_loads_and_names_its_version() -> None:
    policy = load_policy(DEFAULT)
    assert policy.version == "2026-12-1"
    assert policy.base_currency == "USD"
    assert [level.name for level in policy.tier.levels] == ["platinum", "gold", "silver", "bronze"]
    assert {"EUR", "GBP", "JPY", "BRL", "CHF"} <= set(policy.fx)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('min_revenue = "2500"', 'min_revenue = "-1"', "tier.levels[1].min_revenue: must be >= 0"),
        (
            'min_revenue = "2500"',
            "min_revenue = 2500.0",
            "tier.levels[1].min_revenue: must be a decimal",
        ),
        ("window_days = 365", "window_days = 365\nwindwo = 1", "tier.windwo: unknown key"),
        ('version = "2026-12-1"', 'version = ""', "version: must be a non-empty string"),
        ('base_currency = "USD"', 'base_currency = "usd"', "base_currency: must be an ISO 4217"),
        (
            'critical = "97.5"',
            'critical = "40"',
            "churn.levels: must satisfy watch < warning < critical",
        ),
        ('critical = "97.5"', 'critical = "97.55"', "at most one decimal place"),
        (
            'critical = "97.5"',
            "critical = 101",
            "churn.levels.critical: must be between 0 and 100 points",
        ),
        (
            "urgent = 24",
            "urgent = 0",
            "churn.signals.tickets_past_sla.sla_hours.urgent: must be >= 1",
        ),
        ("resolve_margin = 10", "resolve_margin = 98", "alert.resolve_margin: must be smaller"),
        ("horizon_days = 90", "horizon_days = 0", "churn.horizon_days: must be >= 1"),
        ('"2015-01-01" = "1.2141"', '"2015-01-01" = "0"', 'fx.EUR."2015-01-01": must be > 0'),
        (
            '"2015-01-01" = "1.2141"',
            '"2015-13-01" = "1.2"',
            'fx.EUR."2015-13-01": keys must be dates',
        ),
        ("[fx.EUR]", '[fx.USD]\n"2000-01-01" = "1"\n[fx.EUR]', "fx.USD: the base currency"),
        ("[fx.EUR]", '[fx.XYZ]\n"2000-01-01" = "1"\n[fx.EUR]', "fx.XYZ: not an ISO 4217"),
        (
            'churned_after_intervals = "5"',
            'churned_after_intervals = "2"',
            "lifecycle.churned_after",
        ),
        ("min_purchases = 6 ", "min_purchases = 20 ", "tier.levels[1]: levels must be ordered"),
        (
            'intercept = "0.126651"',
            'intercept = "0.1234567"',
            "churn.intercept: must have at most 6",
        ),
        ("intercept = ", "intercept = 1.5 #", "churn.intercept: must be a decimal string"),
        (
            "at = [0, 7, 14, 30,",
            "at = [0, 14, 7, 30,",
            "churn.signals.recency.at: knots must be strictly increasing",
        ),
        ("at = [0, 7, 14, 30,", "at = [7, 14, 30,", "churn.signals.recency.logit: must have one"),
        (
            "[churn.signals.subscription]",
            "[churn.signals.subscriptions]",
            "churn.signals.subscription: is required",
        ),
        (
            "[churn.signals.subscription]\n",
            "[churn.signals.subscription]\nweight = 1\n",
            "churn.signals.subscription.weight: unknown key",
        ),
        ("[churn.signals.recency]\nat = [0", '[churn.signals.recency]\nat = ["x"', "not a decimal"),
    ],
)
def test_an_invalid_policy_is_refused_with_the_key_path(old: str, new: str, message: str) -> None:
    assert old in DEFAULT
    with pytest.raises(PolicyError) as error:
        load_policy(DEFAULT.replace(old, new, 1))
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'name = "gold"',
            'name = "vip"',
            "tier.levels[1].name: must be one of platinum, gold, silver, bronze",
        ),
        ('name = "gold"', 'name = "Gold"', "tier.levels[1].name: must be one of"),
        ('name = "gold"', 'name = "none"', 'tier.levels[1].name: "none" is reserved'),
        ('name = "gold"', 'name = "platinum"', "tier.levels[1].name: levels must be named in"),
        ('name = "silver"', 'name = "platinum"', "tier.levels[2].name: levels must be named in"),
    ],
)
def test_tier_levels_are_named_from_the_tier_vocabulary_highest_first(
    old: str, new: str, message: str
) -> None:
    assert old in DEFAULT
    with pytest.raises(PolicyError) as error:
        load_policy(DEFAULT.replace(old, new, 1))
    assert message in str(error.value)


def test_a_policy_may_use_a_subset_of_the_tiers() -> None:
    gold = DEFAULT.index('[[tier.levels]]\nname = "gold"')
    silver = DEFAULT.index('[[tier.levels]]\nname = "silver"')
    levels = load_policy(DEFAULT[:gold] + DEFAULT[silver:]).tier.levels
    assert [level.name for level in levels] == ["platinum", "silver", "bronze"]


def test_a_missing_section_and_broken_toml_are_refused() -> None:
    with pytest.raises(PolicyError, match=r"^cadence: is required"):
        load_policy(DEFAULT.replace("[cadence]", "[cadence_typo]"))
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy("version = ")


@pytest.mark.parametrize(
    ("day", "rate", "rate_date", "fallback"),
    [
        (datetime(2016, 6, 1, tzinfo=UTC), "1.2141", "2015-01-01", False),  # nearest earlier
        (datetime(2015, 1, 1, tzinfo=UTC), "1.2141", "2015-01-01", False),  # exact date
        (datetime(2014, 12, 31, 23, 59, tzinfo=UTC), "1.4406", "2010-01-01", False),
        (datetime(2030, 1, 1, tzinfo=UTC), "1.0389", "2025-01-01", False),  # latest
        (datetime(1999, 1, 1, tzinfo=UTC), "1.0070", "2000-01-01", True),  # earliest, noted
    ],
)
def test_fx_uses_the_nearest_earlier_rate_else_the_earliest_and_says_so(
    day: datetime, rate: str, rate_date: str, fallback: bool
) -> None:
    conversion = load_policy(DEFAULT).convert(Decimal("10.00"), "EUR", to_micros(day))
    assert conversion.rate == Decimal(rate)
    assert conversion.rate_date == rate_date
    assert conversion.amount == Decimal("10.00") * Decimal(rate)
    assert (conversion.note is not None) == fallback


def test_an_event_in_a_currency_without_rates_is_left_out_of_revenue_and_named() -> None:
    policy = load_policy(DEFAULT)
    events = [purchase("p1", 1, "5000", "XAF"), purchase("p2", 2, "100.00", "USD")]
    view = snapshot(fold("c", events, policy, as_of=at(3)))
    assert view.net_revenue_base == Decimal("100.00")
    assert view.purchase_count == 2
    tier = next(r for r in view.reasons if r.rule == "tier.upgrade")
    assert "XAF" in tier.message
    assert tier.inputs["excluded_no_fx_rate"] == {"XAF": 1}
    assert tier.policy_version == "2026-12-1"


def test_money_in_other_currencies_is_converted_exactly_at_the_event_date() -> None:
    policy = load_policy(DEFAULT)
    events = [purchase("p1", 1, "100.00", "EUR"), purchase("p2", 2, "1000", "JPY")]
    view = snapshot(fold("c", events, policy, as_of=at(3)))
    # 2024 events: the EUR rate of 2022-07-01 and the JPY rate of 2022-11-01 apply
    assert view.net_revenue_base == Decimal("110.980000")


def test_a_time_curve_that_falls_is_refused_because_scores_must_only_rise_between_events() -> None:
    text = simple_policy_text(curves={"recency": ([0, 30, 60], ["0", "1", "0.5"])})
    with pytest.raises(
        PolicyError, match=r"churn\.signals\.recency\.logit: recency may only raise"
    ):
        load_policy(text)


def test_the_score_cuts_read_as_rounded_percentages_of_the_log_odds() -> None:
    policy = load_policy(DEFAULT)
    for steps, cut in enumerate(policy.churn.cuts, start=1):
        # at the cut the probability rounds to `steps` tenths of a percent; just below, not
        assert round(1000 / (1 + math.exp(-cut / 1e6)) + 1e-9) >= steps
        assert 1000 / (1 + math.exp(-(cut - 1) / 1e6)) < steps - 0.5 + 1e-6
