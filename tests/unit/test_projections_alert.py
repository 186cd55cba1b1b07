"""Churn score signals and the alert state machine, with its hysteresis and ops actions."""

from __future__ import annotations

import json
from datetime import timedelta

from infra.bootstrap import default_policy_text
from projections import (
    InputEvent,
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
from tests.unit.quality.simulate import at, event, purchase

POLICY = load_policy(default_policy_text())
MONTHLY = [purchase(f"p{i}", 30 * i) for i in range(6)]  # last purchase on day 150; alert ~266
FIRST = alert_id_for("c", 1)


def alerts(events: list[InputEvent], days: float) -> list[tuple[str, str, object]]:
    steps = replay("c", events, POLICY, as_of=at(days))
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
    state = fold("c", MONTHLY, POLICY, as_of=at(151))
    deadline = next_deadline(state)
    assert deadline is not None
    state, changes = advance(state, at(400))
    raised = changes[0]
    assert (raised.kind, raised.from_value, raised.to_value) == ("alert", "none", "raised")
    assert raised.effective_at == deadline
    assert raised.alert_id == FIRST
    just_before = fold("c", MONTHLY, POLICY, as_of=deadline - timedelta(microseconds=1))
    at_deadline = fold("c", MONTHLY, POLICY, as_of=deadline)
    assert snapshot(just_before).churn_score == 49
    assert snapshot(at_deadline).churn_score == 50
    assert {r.rule for r in raised.reasons} >= {"alert.raised", "churn.inactivity"}


def test_a_churning_customer_is_escalated_and_then_closed_as_churned() -> None:
    states = [to for _, to, _ in alerts(MONTHLY, 600)]
    assert states == ["raised", "escalated", "closed"]


def test_ops_acknowledge_snooze_until_a_time_and_resolve() -> None:
    events = [
        *MONTHLY,
        ops("a1", "acknowledged", 280),
        ops("a2", "snoozed", 281, until=at(290).isoformat()),
    ]
    found = alerts(events, 292)
    assert [to for _, to, _ in found] == ["raised", "acknowledged", "snoozed", "raised"]
    steps = replay("c", events, POLICY, as_of=at(292))
    woke = [c for s in steps for c in s.changes][-1]
    assert woke.effective_at == at(290)
    assert woke.reasons[0].rule == "alert.snooze_ended"


def test_an_ops_action_for_another_alert_id_is_ignored() -> None:
    events = [*MONTHLY, ops("a1", "acknowledged", 280, alert_id="alert-unknown")]
    assert [to for _, to, _ in alerts(events, 281)] == ["raised"]


def test_after_a_manual_resolve_no_new_alert_until_the_customer_recovers() -> None:
    events = [*MONTHLY, ops("a1", "resolved", 280)]
    assert [to for _, to, _ in alerts(events, 380)] == ["raised", "resolved"]  # no escalation
    events += [purchase("back", 380)]  # recovery re-arms; inactivity later raises alert 2
    found = alerts(events, 700)
    assert found[2] == ("none", "raised", alert_id_for("c", 2))
    assert alert_id_for("c", 2) != FIRST


def support_customer(*extra: InputEvent) -> list[InputEvent]:
    """A prospect with no purchases: the score is exactly the sum of the support signals."""
    return [
        event("c1", "complaint", 0, severity="high"),
        event("c2", "complaint", 0.1, severity="high"),  # 2 x 2 x 10, capped at 25
        event("n1", "survey_response", 0.2, score=3),  # detractor: 15
        event("t1", "support_ticket_opened", 0.3, ticket_id="T", priority="urgent"),
        *extra,
    ]


def test_a_ticket_past_its_sla_adds_points_at_the_breach_instant() -> None:
    found = alerts(support_customer(), 2)
    assert found == [("none", "raised", FIRST)]  # 25 + 15 + 10 = 50 at day 1.3
    steps = replay("c", support_customer(), POLICY, as_of=at(2))
    assert steps[-1].at == at(1.3)
    assert steps[-1].summary.churn_score == 50


def test_the_alert_stays_open_at_the_resolve_margin_and_auto_resolves_below_it() -> None:
    resolved_ticket = event("t2", "support_ticket_resolved", 2, ticket_id="T")
    promoter = event("n2", "survey_response", 3, score=9)
    assert [to for _, to, _ in alerts(support_customer(resolved_ticket), 2.5)] == ["raised"]
    assert (
        snapshot(fold("c", support_customer(resolved_ticket), POLICY, as_of=at(2.5))).churn_score
        == 40
    )
    found = alerts(support_customer(resolved_ticket, promoter), 4)
    assert [to for _, to, _ in found] == ["raised", "auto_resolved"]


def test_just_below_warning_no_alert_is_raised() -> None:
    events = support_customer(event("t2", "support_ticket_resolved", 1, ticket_id="T"))
    assert alerts(events, 30) == []
    assert snapshot(fold("c", events, POLICY, as_of=at(1))).churn_level == "watch"


def test_inactivity_is_judged_against_the_customers_own_cadence() -> None:
    weekly_gone = [purchase(f"w{i}", 7 * i) for i in range(20)]  # last on day 133, 35 days ago
    quarterly = [purchase(f"q{i}", 90 * i) for i in range(3)]  # last on day 180, 60 days ago ahead
    weekly = snapshot(fold("w", weekly_gone, POLICY, as_of=at(168)))
    slow = snapshot(fold("q", quarterly, POLICY, as_of=at(240)))
    assert slow.churn_score < weekly.churn_score  # although 60 days > 35 days


def test_a_late_event_is_folded_as_if_it_had_arrived_in_order() -> None:
    late = purchase("late", 200)
    state = initial_state("c", POLICY)
    for item in MONTHLY:
        state, _ = apply(state, item)
    state, _ = advance(state, at(300))
    assert state.alert_open
    state, corrections = apply(state, late)
    assert snapshot(state) == snapshot(fold("c", [*MONTHLY, late], POLICY, as_of=at(300)))
    assert all("late" in c.event_ids for c in corrections)
    assert corrections
    assert corrections[0].reasons[0].rule == "late_event.recomputed"


def test_changes_and_snapshots_serialize_to_json() -> None:
    steps = replay("c", MONTHLY, POLICY, as_of=at(400))
    text = json.dumps([step.to_dict() for step in steps])
    assert '"policy_version": "2026-11-2"' in text


def test_each_change_has_an_id_equal_live_and_in_replay_and_distinct_per_transition() -> None:
    events = [*MONTHLY, ops("a1", "acknowledged", 280), purchase("p9", 330)]
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
