"""Order, duplicates and the way to ``t`` never change the projection at ``t``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from infra.bootstrap import default_policy_text
from projections import (
    CustomerState,
    InputEvent,
    advance,
    alert_id_for,
    apply,
    fold,
    initial_state,
    load_policy,
    next_deadline,
    snapshot,
)
from tests.unit.quality.simulate import at, event

POLICY = load_policy(default_policy_text())
AS_OF = at(900)
FAST = settings(max_examples=60, deadline=None)


_MINOR = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "XAF": 0}


@st.composite
def histories(draw: st.DrawFn) -> list[InputEvent]:
    """A mixed history: purchases and refunds in several currencies with cents (refunds by
    order id or without one), several subscriptions, tickets of every priority, complaints
    of every severity, surveys, and ops actions on the alert ids this customer will
    plausibly get. Several events may share an instant."""
    size = draw(st.integers(1, 30))
    events = []
    orders: list[tuple[str, str]] = []
    for n in range(size):
        day = draw(st.one_of(st.floats(0, 800, allow_nan=False), st.sampled_from([10.0, 300.0])))
        kind = draw(
            st.sampled_from(
                ["purchase"] * 5
                + ["refund", "visit", "complaint", "survey_response", "payment_failed"]
                + ["subscription_started", "subscription_renewed", "subscription_cancelled"]
                + ["support_ticket_opened", "support_ticket_resolved", "alert_acknowledged"]
                + ["alert_snoozed", "alert_resolved"]
            )
        )
        event_id = f"e{n}"
        if kind in ("purchase", "refund"):
            currency = draw(st.sampled_from(sorted(_MINOR)))
            if kind == "refund" and orders and draw(st.booleans()):
                order_id, currency = draw(st.sampled_from(orders))
            else:
                order_id = f"o{n}"
            cents = draw(st.integers(1, 500_000))
            digits = _MINOR[currency]
            amount = str(Decimal(cents).scaleb(-digits)) if digits else str(cents)
            facts = {"order_id": order_id} if kind == "purchase" or draw(st.booleans()) else {}
            if kind == "purchase":
                orders.append((order_id, currency))
            events.append(event(event_id, kind, day, amount=amount, currency=currency, **facts))
        elif kind.startswith("alert_"):
            facts = {"alert_id": alert_id_for("c", draw(st.integers(1, 2))), "by": "ops"}
            if kind == "alert_snoozed":
                facts["until"] = at(day + draw(st.integers(1, 60))).isoformat()
            events.append(event(event_id, kind, day, **facts))
        else:
            facts = {
                "subscription_id": draw(st.sampled_from(["s1", "s2"])),
                "ticket_id": f"t{draw(st.integers(0, 2))}",
                "priority": draw(st.sampled_from(["urgent", "high", "normal", "low"])),
                "score": draw(st.integers(0, 10)),
                "severity": draw(st.sampled_from(["low", "medium", "high"])),
            }
            events.append(event(event_id, kind, day, **facts))
    return events


def incremental(events: list[InputEvent]) -> CustomerState:
    state = initial_state("c", POLICY)
    for item in events:
        state, _ = apply(state, item)
    state, _ = advance(state, AS_OF)
    return state


@FAST
@given(histories(), st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_the_state_at_t(
    events: list[InputEvent], rng: object
) -> None:
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert snapshot(incremental(shuffled)) == snapshot(incremental(events))


@FAST
@given(histories())
def test_one_pass_fold_equals_incremental_apply(events: list[InputEvent]) -> None:
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    assert snapshot(fold("c", events, POLICY, as_of=AS_OF)) == snapshot(incremental(ordered))


@FAST
@given(histories(), st.data())
def test_applying_a_duplicate_changes_nothing(
    events: list[InputEvent], data: st.DataObject
) -> None:
    state = incremental(events)
    before = snapshot(state)
    duplicate = data.draw(st.sampled_from(events))
    state, changes = apply(state, duplicate)
    assert changes == []
    assert snapshot(state) == before


@FAST
@given(histories(), st.lists(st.floats(0, 900, allow_nan=False), max_size=6))
def test_advancing_in_one_step_equals_advancing_through_intermediate_instants(
    events: list[InputEvent], stops: list[float]
) -> None:
    last = max(e.occurred_at for e in events)
    one = fold("c", events, POLICY, as_of=last)
    many = fold("c", events, POLICY, as_of=last)
    one, changes_one = advance(one, AS_OF)
    changes_many = []
    for day in sorted(stops):
        instant = at(day)
        if last <= instant <= AS_OF:
            many, found = advance(many, instant)
            changes_many.extend(found)
    many, found = advance(many, AS_OF)
    changes_many.extend(found)
    assert snapshot(one) == snapshot(many)
    assert changes_one == changes_many


@FAST
@given(histories())
def test_there_is_never_more_than_one_open_alert(events: list[InputEvent]) -> None:
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    state = initial_state("c", POLICY)
    open_alert: str | None = None
    for item in ordered:
        state, changes = apply(state, item)
        for change in changes:
            if change.kind != "alert":
                continue
            if change.from_value == "none":
                assert open_alert is None, "a second alert opened while one was open"
                open_alert = change.alert_id
            else:
                assert change.alert_id == open_alert
            if change.to_value in ("resolved", "auto_resolved", "closed"):
                open_alert = None
    assert (open_alert is not None) == state.alert_open


@FAST
@given(histories())
def test_next_deadline_is_when_the_next_change_happens(events: list[InputEvent]) -> None:
    last = max(e.occurred_at for e in events)
    state = fold("c", events, POLICY, as_of=last)
    deadline = next_deadline(state)
    if deadline is None:
        _, changes = advance(state.copy(), last + timedelta(days=3650))
        assert changes == []
        return
    _, before = advance(state.copy(), deadline - timedelta(microseconds=1))
    assert before == []
    _, at_deadline = advance(state.copy(), deadline)
    assert at_deadline
    assert all(change.effective_at == deadline for change in at_deadline)


@FAST
@given(histories(), st.lists(st.floats(0, 60, allow_nan=False), min_size=1, max_size=30))
def test_events_arriving_after_a_timer_advanced_past_them_fold_as_if_in_time(
    events: list[InputEvent], leads: list[float]
) -> None:
    """The live case the mark serves: in arrival (= time) order, but a timer advanced the
    customer up to some days beyond each event before the next one arrived. Both the
    state and the visible changes must equal folding them without the timer."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    live = initial_state("c", POLICY)
    visible = []
    for n, item in enumerate(ordered):
        live, changes = apply(live, item)
        visible.extend(changes)
        clock = item.occurred_at + timedelta(days=leads[n % len(leads)])
        live, changes = advance(live, min(clock, AS_OF))
        visible.extend(changes)
    live, changes = advance(live, AS_OF)
    visible.extend(changes)
    assert snapshot(live) == snapshot(fold("c", events, POLICY, as_of=AS_OF))
    final = {change.kind: change.to_value for change in visible}
    expected = snapshot(incremental(ordered))
    for kind, value in final.items():
        current = {
            "tier": expected.tier,
            "lifecycle": expected.lifecycle_stage,
            "alert": expected.alert_state,
        }[kind]
        assert value == current, kind


@FAST
@given(histories(), st.data())
def test_any_arrival_with_redeliveries_and_timers_in_between_ends_at_the_replay(
    events: list[InputEvent], data: st.DataObject
) -> None:
    """Out of order, each event possibly delivered again later (a redelivery mid-stream),
    and a timer advancing the customer to "now" between arrivals (now never goes back):
    the state at the end is the one-pass fold of the set of events."""
    arrivals = data.draw(st.permutations(events))
    again = data.draw(st.lists(st.sampled_from(events), max_size=5))
    for item in again:
        arrivals.insert(data.draw(st.integers(0, len(arrivals))), item)
    state = initial_state("c", POLICY)
    now = at(0)
    for item in arrivals:
        state, _ = apply(state, item)
        if data.draw(st.booleans()):
            now = max(now, item.occurred_at + timedelta(days=data.draw(st.floats(0, 90))))
            state, _ = advance(state, min(now, AS_OF))
    state, _ = advance(state, AS_OF)
    assert snapshot(state) == snapshot(fold("c", events, POLICY, as_of=AS_OF))
