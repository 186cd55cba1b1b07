"""Churn score signals and the alert state machine, with its hysteresis and ops actions.

On a policy with round curves (`tests.unit.quality.policies`): log-odds -3, plus 0 to 6
for recency (even odds after 180 days), plus 1 per low complaint, 1 for a detractor
answer and 1 for a ticket past its SLA. Levels: watch 30, warning 50, critical 70.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from infra.bootstrap import default_policy_text
from projections import (
    InputEvent,
    Policy,
    advance,
    alert_id_for,
    apply,
    fold,
    initial_state,
    load_policy,
    next_deadline,
    replay,
    snapshot,
)
from tests.unit.quality.policies import percent, simple_policy
from tests.unit.quality.simulate import at, event, purchase

POLICY = simple_policy()
MONTHLY = [purchase(f"p{i}", 30 * i) for i in range(6)]
"""Last purchase on day 150: at risk on day 281, alert on day 330 (180 days), critical
around day 382, churned (5 expected intervals of 52.5 days) on day 412.5."""
FIRST = alert_id_for("c", 1)


def alerts(
    events: list[InputEvent], days: float, policy: Policy = POLICY
) -> list[tuple[str, str, object]]:
    steps = replay("c", events, policy, as_of=at(days))
    return [
        (c.from_value, c.to_value, c.alert_id)
        for s in steps
        for c in s.changes
        if c.kind == "alert"
    ]


def ops(event_id: str, kind: str, day: float, alert_id: str = FIRST, **facts: object) -> InputEvent:
    return event(
        event_id, f"alert_{kind}", day, alert_id=alert_id, by="ana", reason="called", **facts
    )


def test_inactivity_raises_an_alert_at_the_computed_instant_not_when_noticed() -> None:
    state = fold("c", MONTHLY, POLICY, as_of=at(300))
    deadline = next_deadline(state)
    assert deadline is not None
    assert at(329.8) < deadline <= at(330)  # 180 days is 50.00 %; 49.95 % already shows 50.0
    state, changes = advance(state, at(400))
    raised = changes[0]
    assert (raised.kind, raised.from_value, raised.to_value) == ("alert", "none", "raised")
    assert raised.effective_at == deadline
    assert raised.alert_id == FIRST
    just_before = fold("c", MONTHLY, POLICY, as_of=deadline - timedelta(microseconds=1))
    at_deadline = fold("c", MONTHLY, POLICY, as_of=deadline)
    assert snapshot(just_before).churn_score == Decimal("49.9")
    assert snapshot(at_deadline).churn_score == Decimal("50.0")
    assert {r.rule for r in raised.reasons} >= {"alert.raised", "churn.inactivity"}


def test_a_churning_customer_is_escalated_and_then_closed_as_churned() -> None:
    states = [to for _, to, _ in alerts(MONTHLY, 600)]
    assert states == ["raised", "escalated", "closed"]


def test_ops_acknowledge_snooze_until_a_time_and_resolve() -> None:
    events = [
        *MONTHLY,
        ops("a1", "acknowledged", 335),
        ops("a2", "snoozed", 336, until=at(345).isoformat()),
    ]
    found = alerts(events, 347)
    assert [to for _, to, _ in found] == ["raised", "acknowledged", "snoozed", "raised"]
    steps = replay("c", events, POLICY, as_of=at(347))
    woke = [c for s in steps for c in s.changes][-1]
    assert woke.effective_at == at(345)
    assert woke.reasons[0].rule == "alert.snooze_ended"


def test_an_ops_action_for_another_alert_id_is_ignored() -> None:
    events = [*MONTHLY, ops("a1", "acknowledged", 335, alert_id="alert-unknown")]
    assert [to for _, to, _ in alerts(events, 336)] == ["raised"]


def test_after_a_manual_resolve_no_new_alert_until_the_customer_recovers() -> None:
    events = [*MONTHLY, ops("a1", "resolved", 335)]
    assert [to for _, to, _ in alerts(events, 380)] == ["raised", "resolved"]  # no escalation
    events += [purchase("back", 380)]  # recovery re-arms; inactivity later raises alert 2
    found = alerts(events, 700)
    assert found[2] == ("none", "raised", alert_id_for("c", 2))
    assert alert_id_for("c", 2) != FIRST


def support_customer(*extra: InputEvent) -> list[InputEvent]:
    """One purchase, then a low complaint and a detractor answer (log-odds -3 + 1 + 1: a
    score of 26.9), and an urgent ticket whose SLA ends on day 1.3 (+1: 50.0)."""
    return [
        purchase("p", 0),
        event("c1", "complaint", 0.1, severity="low"),
        event("n1", "survey_response", 0.2, score=3),
        event("t1", "support_ticket_opened", 0.3, ticket_id="T", priority="urgent"),
        *extra,
    ]


def test_a_ticket_past_its_sla_raises_the_score_at_the_breach_instant() -> None:
    assert alerts(support_customer(), 2) == [("none", "raised", FIRST)]
    steps = replay("c", support_customer(), POLICY, as_of=at(2))
    breach = next(s for s in steps if any(c.kind == "alert" for c in s.changes))
    assert breach.at == at(1.3)
    assert breach.summary.churn_score == Decimal("50.0")


def test_the_alert_stays_open_above_the_resolve_line_and_auto_resolves_below_it() -> None:
    policy = simple_policy(resolve_margin=25)  # an open alert resolves below 25
    resolved_ticket = event("t2", "support_ticket_resolved", 2, ticket_id="T")
    promoter = event("n2", "survey_response", 3, score=9)
    assert [to for _, to, _ in alerts(support_customer(resolved_ticket), 2.5, policy)] == ["raised"]
    view = snapshot(fold("c", support_customer(resolved_ticket), policy, as_of=at(2.5)))
    assert float(view.churn_score) == percent(-1)  # 26.9: below warning, above the line
    found = alerts(support_customer(resolved_ticket, promoter), 4, policy)
    assert [to for _, to, _ in found] == ["raised", "auto_resolved"]


def test_below_warning_no_alert_is_raised() -> None:
    events = support_customer(event("t2", "support_ticket_resolved", 1, ticket_id="T"))
    assert alerts(events, 30) == []
    view = snapshot(fold("c", events, POLICY, as_of=at(1)))
    assert (float(view.churn_score), view.churn_level) == (percent(-1), "none")


def test_inactivity_is_judged_against_the_customers_own_cadence() -> None:
    default = load_policy(default_policy_text())
    weekly_gone = [purchase(f"w{i}", 7 * i) for i in range(20)]  # last on day 133
    quarterly = [purchase(f"q{i}", 90 * i) for i in range(3)]  # last on day 180
    weekly = snapshot(fold("w", weekly_gone, default, as_of=at(193)))
    slow = snapshot(fold("q", quarterly, default, as_of=at(240)))
    late = {r.rule: r for r in weekly.churn_signals}["churn.inactivity"].inputs
    calm = {r.rule: r for r in slow.churn_signals}["churn.inactivity"].inputs
    assert late["days_since_last_commerce"] == calm["days_since_last_commerce"] == 60
    assert late["intervals"] > 2 * calm["intervals"]  # the same 60 days, measured in cadence
    assert late["logit"] > calm["logit"]


def test_a_late_event_is_folded_as_if_it_had_arrived_in_order() -> None:
    late = purchase("late", 200)
    state = initial_state("c", POLICY)
    for item in MONTHLY:
        state, _ = apply(state, item)
    state, _ = advance(state, at(340))
    assert state.alert_open
    state, corrections = apply(state, late)
    assert snapshot(state) == snapshot(fold("c", [*MONTHLY, late], POLICY, as_of=at(340)))
    assert all("late" in c.event_ids for c in corrections)
    assert corrections
    assert corrections[0].reasons[0].rule == "late_event.recomputed"


def test_changes_and_snapshots_serialize_to_json() -> None:
    steps = replay("c", MONTHLY, POLICY, as_of=at(400))
    text = json.dumps([step.to_dict() for step in steps])
    assert '"policy_version": "test-simple"' in text
    json.dumps(snapshot(fold("c", MONTHLY, POLICY, as_of=at(400))).to_dict())


def test_each_change_has_an_id_equal_live_and_in_replay_and_distinct_per_transition() -> None:
    events = [*MONTHLY, ops("a1", "acknowledged", 335), purchase("p9", 340)]
    state = initial_state("c", POLICY)
    live = []
    for item in events:
        state, changes = advance(state, item.occurred_at)
        live.extend(changes)
        state, changes = apply(state, item)
        live.extend(changes)
    state, changes = advance(state, at(600))
    live.extend(changes)
    replayed = [c for s in replay("c", events, POLICY, as_of=at(600)) for c in s.changes]

    assert [c.change_id for c in live] == [c.change_id for c in replayed]
    ids = [c.change_id for c in replayed]
    assert len(set(ids)) == len(ids), "every transition has its own id"
    assert {c.kind for c in replayed} == {"tier", "lifecycle", "alert"}
    assert all(c.to_dict()["change_id"] == c.change_id for c in replayed)
