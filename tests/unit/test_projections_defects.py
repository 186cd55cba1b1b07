"""Regression tests for the defects a newcomer hit (issue 8, item 5)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings

from adapters.simulate import simulate
from domain.interactions import parse_interaction
from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy, replay, snapshot
from projections.model import to_micros
from tests.unit.quality.simulate import at, event
from tests.unit.test_projections_properties import histories

POLICY = load_policy(default_policy_text())


def money(
    event_id: str, kind: str, day: float, amount: str, currency: str, **facts: object
) -> InputEvent:
    return event(event_id, kind, day, amount=amount, currency=currency, **facts)


def test_bronze_falls_to_none_after_the_grace_when_the_only_purchase_was_refunded() -> None:
    events = [
        money("p", "purchase", 0, "80.00", "USD", order_id="o1"),
        money("r", "refund", 3, "80.00", "USD", order_id="o1"),
    ]
    assert snapshot(fold("c", events[:1], POLICY, as_of=at(1))).tier == "bronze"
    view = snapshot(fold("c", events, POLICY, as_of=at(730)))
    assert (view.tier, view.window_purchase_count, view.net_revenue_base) == ("none", 0, 0)
    # not at once: a downgrade waits for the grace period (30 days)
    assert snapshot(fold("c", events, POLICY, as_of=at(20))).tier == "bronze"
    assert snapshot(fold("c", events, POLICY, as_of=at(40))).tier == "none"


def test_bronze_decays_when_the_last_purchase_leaves_the_window() -> None:
    events = [money("p", "purchase", 0, "80.00", "USD")]
    assert snapshot(fold("c", events, POLICY, as_of=at(380))).tier == "bronze"  # grace
    assert snapshot(fold("c", events, POLICY, as_of=at(400))).tier == "none"


def test_no_simulated_customer_keeps_a_tier_two_years_after_their_last_purchase() -> None:
    end = at(1000)
    result = simulate(customers=2000, seed=3, end=end, days=365)
    by_customer: dict[str, list[InputEvent]] = {}
    for raw in result.interactions:
        item = parse_interaction(raw, now=end, max_future_skew=timedelta(0))
        by_customer.setdefault(item.customer_id, []).append(
            InputEvent(
                f"{item.source}/{item.event_id}", 0, item.kind.value, item.occurred_at,
                None if item.money is None else item.money.amount,
                None if item.money is None else item.money.currency, item.facts,
            )
        )  # fmt: skip
    views = [
        snapshot(fold(c, e, POLICY, as_of=end + timedelta(days=730)))
        for c, e in by_customer.items()
    ]
    stale = [v for v in views if v.tier != "none" and v.window_purchase_count == 0]
    assert not stale
    assert all(v.net_revenue_base >= 0 for v in views)


def test_a_refunded_foreign_purchase_nets_to_zero_at_the_purchase_rate() -> None:
    # EUR changes rate between the purchase (2024) and the refund (2025-01-01 onwards)
    events = [
        money("p", "purchase", 300, "100.00", "EUR", order_id="o1"),
        money("r", "refund", 370, "100.00", "EUR", order_id="o1"),
    ]
    view = snapshot(fold("c", events, POLICY, as_of=at(380)))
    assert view.net_revenue_base == 0
    partial = [events[0], money("r", "refund", 370, "40.00", "EUR", order_id="o1")]
    rate = POLICY.convert(Decimal(1), "EUR", to_micros(at(300))).rate  # in force in 2024
    assert rate is not None
    assert (
        snapshot(fold("c", partial, POLICY, as_of=at(380))).net_revenue_base
        == Decimal("60.00") * rate
    )


def test_a_refund_of_a_purchase_before_the_window_never_makes_revenue_negative() -> None:
    events = [
        money("old", "purchase", 0, "500.00", "USD", order_id="o-old"),
        money("new", "purchase", 400, "50.00", "USD", order_id="o-new"),
        money(
            "r", "refund", 420, "500.00", "USD", order_id="o-old"
        ),  # its purchase left the window
    ]
    view = snapshot(fold("c", events, POLICY, as_of=at(421)))
    assert view.net_revenue_base == Decimal("50.00")
    unmatched = [*events[:2], money("r", "refund", 420, "500.00", "USD")]  # no order id
    view = snapshot(fold("c", unmatched, POLICY, as_of=at(421)))
    assert view.net_revenue_base == 0  # nets against what is in the window, and no further


def test_a_refund_nets_inside_its_purchases_window_and_leaves_with_it() -> None:
    events = [
        money("a", "purchase", 0, "300.00", "USD", order_id="oa"),
        money("b", "purchase", 200, "300.00", "USD", order_id="ob"),
        money("r", "refund", 300, "100.00", "USD", order_id="oa"),
    ]
    assert snapshot(fold("c", events, POLICY, as_of=at(301))).net_revenue_base == Decimal("500.00")
    # day 365: purchase a and its refund leave the trailing year together
    assert snapshot(fold("c", events, POLICY, as_of=at(366))).net_revenue_base == Decimal("300.00")


def test_churn_signals_are_only_the_ones_in_force_now() -> None:
    events = [
        money("p", "purchase", 0, "50.00", "USD"),
        event("s", "subscription_started", 1, subscription_id="s1"),
        event("x", "subscription_cancelled", 10, subscription_id="s1"),
        event("c", "complaint", 11, severity="high"),
    ]
    fresh = {r.rule for r in snapshot(fold("c", events, POLICY, as_of=at(12))).churn_signals}
    assert {"churn.cancellation", "churn.complaints"} <= fresh
    later = snapshot(fold("c", events, POLICY, as_of=at(200)))  # both windows passed
    rules = {r.rule for r in later.churn_signals}
    assert not rules & {"churn.cancellation", "churn.complaints"}
    # nor in the reasons of what the snapshot shows (the alert raised since names the
    # signals in force when it was raised)
    assert not {r.rule for r in later.reasons} & {"churn.cancellation", "churn.complaints"}


@settings(max_examples=60, deadline=None)
@given(histories())
def test_the_replay_ends_with_the_state_customer_as_of_shows(events: list[InputEvent]) -> None:
    for day in (5, 200, 900):
        steps = replay("c", events, POLICY, as_of=at(day))
        view = snapshot(fold("c", events, POLICY, as_of=at(day)))
        last = steps[-1]
        assert last.at == at(day)
        summary = last.summary.to_dict()
        assert summary == {k: v for k, v in view.to_dict().items() if k in summary}


def test_time_driven_score_changes_are_replay_steps_at_their_instants() -> None:
    events = [money(f"p{i}", "purchase", 7 * i, "40.00", "USD") for i in range(10)]
    steps = replay("c", events, POLICY, as_of=at(400))
    rising = [s for s in steps if s.kind == "score"]
    assert rising
    levels = [s.summary.churn_level for s in steps]
    for step in rising:
        before = steps[steps.index(step) - 1]
        assert step.summary.churn_level != before.summary.churn_level
        just_before = snapshot(fold("c", events, POLICY, as_of=step.at - timedelta(microseconds=1)))
        assert just_before.churn_level == before.summary.churn_level
    assert levels[-1] in ("warning", "critical", "watch")
