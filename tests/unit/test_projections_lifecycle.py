"""Lifecycle: forward and backward transitions, with the time each stage was entered."""

from __future__ import annotations

from datetime import datetime

from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy, replay, snapshot
from tests.unit.quality.simulate import at, event, purchase

POLICY = load_policy(default_policy_text())


def stages(events: list[InputEvent], days: float) -> list[tuple[str, datetime]]:
    steps = replay("c", events, POLICY, as_of=at(days))
    return [(c.to_value, c.effective_at) for s in steps for c in s.changes if c.kind == "lifecycle"]


def test_a_customer_moves_from_prospect_to_new_to_active_to_loyal() -> None:
    events = [event("r", "registered", 0)] + [purchase(f"p{i}", 30 * i) for i in range(14)]
    assert stages(events, 400) == [("new", at(0)), ("active", at(30)), ("loyal", at(365))]


def test_registering_alone_keeps_a_customer_a_prospect() -> None:
    state = fold("c", [event("r", "registered", 0)], POLICY, as_of=at(500))
    assert snapshot(state).lifecycle_stage == "prospect"


def test_an_inactive_customer_goes_at_risk_then_churned_then_comes_back() -> None:
    events = [purchase(f"p{i}", 10 * i) for i in range(10)]  # expected interval 30 days
    events += [purchase("back", 300), purchase("again", 310)]
    found = stages(events, 320)
    assert [stage for stage, _ in found] == [
        "new", "active", "at_risk", "churned", "reactivated", "active",
    ]  # fmt: skip
    at_risk, churned = found[2][1], found[3][1]
    assert at_risk == at(165)  # 90 + 2.5 * 30 days: (3 * 90 + 90) / (3 + 9) = 30
    assert churned == at(240)  # 90 + 5 * 30 days (> churned_min_days = 120)
    assert found[4][1] == at(300)
    view = snapshot(fold("c", events, POLICY, as_of=at(320)))
    assert view.stage_entries == {
        "prospect": 1, "new": 1, "active": 2, "at_risk": 1, "churned": 1, "reactivated": 1,
    }  # fmt: skip
    assert view.stage_days["churned"] == 60
    assert view.stage_entered_at == at(310)


def test_a_purchase_while_at_risk_makes_the_customer_active_again() -> None:
    events = [purchase(f"p{i}", 10 * i) for i in range(10)] + [purchase("p", 170)]
    assert [s for s, _ in stages(events, 180)][-2:] == ["at_risk", "active"]


def test_one_day_before_the_at_risk_deadline_the_customer_is_still_active() -> None:
    events = [purchase(f"p{i}", 10 * i) for i in range(10)]
    assert snapshot(fold("c", events, POLICY, as_of=at(164))).lifecycle_stage == "active"
    assert snapshot(fold("c", events, POLICY, as_of=at(165))).lifecycle_stage == "at_risk"


def test_an_active_subscription_keeps_a_customer_engaged_and_cancelling_it_puts_them_at_risk() -> (
    None
):
    events = [
        event("s1", "subscription_started", 0, subscription_id="sub"),
        event("s2", "subscription_renewed", 30, subscription_id="sub"),
    ]
    assert snapshot(fold("c", events, POLICY, as_of=at(300))).lifecycle_stage == "active"
    events.append(event("s3", "subscription_cancelled", 301, subscription_id="sub"))
    found = stages(events, 302)
    assert found[-1] == ("at_risk", at(301))
    steps = replay("c", events, POLICY, as_of=at(302))
    last = [c for s in steps for c in s.changes if c.kind == "lifecycle"][-1]
    assert last.reasons[0].rule == "lifecycle.subscription_cancelled"
    assert "s3" in last.event_ids
