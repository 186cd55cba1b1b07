"""The fast paths of the engine (window-edge shortcut, event-time skips, cached values)
give exactly what a full evaluation at every deadline gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from hypothesis import given, settings

from infra.bootstrap import default_policy_text
from projections import (
    InputEvent,
    advance,
    apply,
    driver,
    fold,
    initial_state,
    load_policy,
    next_deadline,
    replay,
    snapshot,
)
from projections import churn as signals
from projections.state import CustomerState
from tests.unit.quality.simulate import at, event
from tests.unit.test_projections_properties import AS_OF, histories

POLICY = load_policy(default_policy_text())


@contextmanager
def full_evaluation_everywhere() -> Iterator[None]:
    """Every window edge evaluated in full, and the trend never cached."""
    patch = pytest.MonkeyPatch()
    patch.setattr(
        driver, "window_edge", lambda state, t, changes: driver._evaluate(state, t, None, changes)
    )
    original = signals.static_logit

    def uncached(state: CustomerState, t: int) -> int:
        state.trend = -1
        state.static_base = None
        return original(state, t)

    patch.setattr(signals, "static_logit", uncached)
    try:
        yield
    finally:
        patch.undo()


@settings(max_examples=60, deadline=None)
@given(histories())
def test_window_edge_shortcut_equals_full_evaluation(events: list[InputEvent]) -> None:
    fast = [step.to_dict() for step in replay("c", events, POLICY, as_of=AS_OF)]
    with full_evaluation_everywhere():
        slow = [step.to_dict() for step in replay("c", events, POLICY, as_of=AS_OF)]
    assert fast == slow


def test_a_busy_year_of_purchases_and_refunds_is_unchanged_by_the_shortcut() -> None:
    events = [
        event(f"e{n}", "refund" if n % 7 == 3 else "purchase", n * 9.5,
              amount=str(300 + 97 * (n % 11)), currency="EUR" if n % 3 else "USD")
        for n in range(80)
    ]  # fmt: skip
    events.append(event("c1", "complaint", 200, severity="high"))
    events.append(event("t1", "support_ticket_opened", 300, ticket_id="t", priority="urgent"))
    fast = [step.to_dict() for step in replay("c", events, POLICY, as_of=at(1500))]
    with full_evaluation_everywhere():
        slow = [step.to_dict() for step in replay("c", events, POLICY, as_of=at(1500))]
    assert fast == slow
    assert any(change["kind"] == "tier" for step in fast for change in step["changes"])


def test_tickets_reopened_and_resolved_keep_their_breach_count_exact() -> None:
    events = [
        event("p", "purchase", 0, amount="100", currency="USD"),
        event("o1", "support_ticket_opened", 1, ticket_id="a", priority="urgent"),
        event("o2", "support_ticket_opened", 1.5, ticket_id="a", priority="low"),
        event("o3", "support_ticket_opened", 2, ticket_id="b", priority="urgent"),
        event("r1", "support_ticket_resolved", 2.5, ticket_id="b"),
        event("r2", "support_ticket_resolved", 2.6, ticket_id="zzz"),
    ]
    state = fold("c", events, POLICY, as_of=at(30))
    assert state.ticket_dues == sorted(ticket[0] for ticket in state.tickets.values())
    reasons = {r.rule: r for r in snapshot(state).churn_signals}
    shown = reasons["churn.tickets_past_sla"].inputs
    assert (shown["breached"], shown["open"]) == (1, 1)


def test_a_probe_copy_does_not_share_the_ticket_index() -> None:
    state = initial_state("c", POLICY)
    state, _ = apply(state, event("o", "support_ticket_opened", 0, ticket_id="a"))
    probe = state.copy(share_log=True)
    state, _ = apply(state, event("r", "support_ticket_resolved", 1, ticket_id="a"))
    assert probe.ticket_dues
    assert not state.ticket_dues
    assert next_deadline(state) is None
    _, changes = advance(state, at(1) + timedelta(days=1))
    assert changes == []
