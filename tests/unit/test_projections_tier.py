"""Tier: upgrades at once, downgrades only after a grace period below the margin."""

from __future__ import annotations

from datetime import datetime

from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy, replay, snapshot
from tests.unit.quality.simulate import at, event, purchase

POLICY = load_policy(default_policy_text())


def tier_changes(events: list[InputEvent], days: float) -> list[tuple[str, str, datetime]]:
    steps = replay("c", events, POLICY, as_of=at(days))
    return [
        (c.from_value, c.to_value, c.effective_at)
        for step in steps
        for c in step.changes
        if c.kind == "tier"
    ]


def refund(event_id: str, day: float, amount: str) -> InputEvent:
    return event(event_id, "refund", day, amount=amount, currency="USD")


SILVER = [purchase("p1", 0, "200.00"), purchase("p2", 1, "200.00"), purchase("p3", 2, "200.00")]


def test_an_upgrade_applies_at_the_event_that_qualifies() -> None:
    assert tier_changes(SILVER, 3) == [("none", "bronze", at(0)), ("bronze", "silver", at(2))]


def test_just_below_a_threshold_does_not_qualify_and_exactly_at_it_does() -> None:
    below = [*SILVER[:2], purchase("p3", 2, "99.99")]
    exact = [*SILVER[:2], purchase("p3", 2, "100.00")]
    assert snapshot(fold("c", below, POLICY, as_of=at(3))).tier == "bronze"
    assert snapshot(fold("c", exact, POLICY, as_of=at(3))).tier == "silver"


def test_falling_below_the_margin_downgrades_only_after_the_grace_period() -> None:
    events = [*SILVER, refund("r1", 10, "160.00")]  # 440 < 450 = 500 - 10%
    changes = tier_changes(events, 100)
    assert changes[-1] == ("silver", "bronze", at(40))
    assert snapshot(fold("c", events, POLICY, as_of=at(39.99))).tier == "silver"


def test_staying_within_the_margin_never_downgrades() -> None:
    events = [*SILVER, refund("r1", 10, "150.00")]  # 450: exactly at the margin floor
    assert snapshot(fold("c", events, POLICY, as_of=at(300))).tier == "silver"


def test_recovering_during_the_grace_period_cancels_the_downgrade() -> None:
    events = [*SILVER, refund("r1", 10, "160.00"), purchase("p4", 30, "100.00")]
    assert snapshot(fold("c", events, POLICY, as_of=at(60))).tier == "silver"


def test_a_new_fall_after_recovery_starts_a_new_grace_period() -> None:
    events = [
        *SILVER,
        refund("r1", 10, "160.00"),
        event("p4", "purchase", 30, amount="100.00", currency="USD"),
        refund("r2", 35, "100.00"),
    ]
    assert tier_changes(events, 100)[-1] == ("silver", "bronze", at(65))


def test_purchases_leaving_the_trailing_window_downgrade_after_the_grace_period() -> None:
    changes = tier_changes(SILVER, 500)
    assert changes[-1] == ("silver", "none", at(395))  # below margin from day 365, +30


def test_every_tier_change_explains_itself_with_inputs_thresholds_and_events() -> None:
    steps = replay("c", SILVER, POLICY, as_of=at(3))
    change = next(c for s in steps for c in s.changes if c.to_value == "silver")
    (reason,) = change.reasons
    assert reason.rule == "tier.upgrade"
    assert reason.policy_version == POLICY.version
    assert reason.inputs["purchases_in_window"] == 3
    assert reason.thresholds["to_min_revenue"] == POLICY.tier.levels[2].min_revenue
    assert change.event_ids == ("p3",)
    assert change.to_dict()["reasons"][0]["inputs"]["net_revenue_base"] == "600.00"
