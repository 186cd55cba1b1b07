"""The policy file: strict validation naming the key, FX conversion by date."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from infra.bootstrap import default_policy_text
from projections import PolicyError, fold, load_policy, snapshot
from projections.model import to_micros
from tests.unit.quality.simulate import at, purchase

DEFAULT = default_policy_text()


def test_the_packaged_default_policy_loads_and_names_its_version() -> None:
    policy = load_policy(DEFAULT)
    assert policy.version == "2026-11-2"
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
        ('version = "2026-11-2"', 'version = ""', "version: must be a non-empty string"),
        ('base_currency = "USD"', 'base_currency = "usd"', "base_currency: must be an ISO 4217"),
        ("critical = 70", "critical = 40", "churn.levels: must satisfy watch < warning < critical"),
        ("urgent = 24", "urgent = 0", "churn.tickets.sla_hours.urgent: must be >= 1"),
        ("resolve_margin = 10", "resolve_margin = 60", "alert.resolve_margin: must be smaller"),
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
        ("weight = 70", "weight = true", "churn.inactivity.weight: must be an integer"),
        ('start_intervals = "1.0"', 'start_intervals = "0.1234567"', "at most 6 decimal places"),
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
    assert tier.policy_version == "2026-11-2"


def test_money_in_other_currencies_is_converted_exactly_at_the_event_date() -> None:
    policy = load_policy(DEFAULT)
    events = [purchase("p1", 1, "100.00", "EUR"), purchase("p2", 2, "1000", "JPY")]
    view = snapshot(fold("c", events, policy, as_of=at(3)))
    # 2024 events: the EUR rate of 2022-07-01 and the JPY rate of 2022-11-01 apply
    assert view.net_revenue_base == Decimal("110.980000")
