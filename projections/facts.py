"""Recording the facts of an event into the running statistics, and letting them expire.

Each event kind feeds its windows and counters here (purchases and refunds the tier and
trend windows, tickets, complaints, surveys, payments and cancellations the churn
signals); pruning drops what has left its window at an instant and says what moved, so
the deadline shortcut (:func:`projections.deadlines.window_edge`) knows what to
re-evaluate.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from decimal import Decimal
from typing import Final

from domain.interactions import Kind
from projections import churn as signals
from projections.model import ALERT_ACKNOWLEDGED, ALERT_RESOLVED, ALERT_SNOOZED, InputEvent
from projections.policy import MONEY_CONTEXT
from projections.state import CustomerState

_PURCHASE, _REFUND = Kind.PURCHASE.value, Kind.REFUND.value

_SUB_STARTED, _SUB_RENEWED = Kind.SUBSCRIPTION_STARTED.value, Kind.SUBSCRIPTION_RENEWED.value

_SUB_CANCELLED = Kind.SUBSCRIPTION_CANCELLED.value

RELEVANT_KINDS: Final = frozenset(
    {
        _PURCHASE,
        _REFUND,
        _SUB_STARTED,
        _SUB_RENEWED,
        _SUB_CANCELLED,
        Kind.PAYMENT_FAILED.value,
        Kind.SUPPORT_TICKET_OPENED.value,
        Kind.SUPPORT_TICKET_RESOLVED.value,
        Kind.COMPLAINT.value,
        Kind.SURVEY_RESPONSE.value,
        ALERT_ACKNOWLEDGED,
        ALERT_SNOOZED,
        ALERT_RESOLVED,
    }
)
"""Kinds that can change a projection; the others (visits, logins, emails, profile)
only move the clock, which keeps the most frequent events the cheapest."""

TIER_KINDS: Final = frozenset({_PURCHASE, _REFUND, _SUB_STARTED, _SUB_RENEWED})
"""Kinds that can add to the tier window."""

LIFECYCLE_KINDS: Final = TIER_KINDS | {_SUB_CANCELLED}
"""Kinds that can change a lifecycle input (purchases, subscriptions, last commerce)."""


def record(state: CustomerState, event: InputEvent, at: int) -> None:  # noqa: PLR0912, PLR0915 -- one branch per event kind reads best
    """Update the running statistics with one event (in event-time order)."""
    kind = event.kind
    policy = state.policy
    facts = event.facts
    state.other_base = -1
    if kind in (_PURCHASE, _REFUND, _SUB_STARTED, _SUB_RENEWED):
        amount = _base_amount(state, event, at)
        if kind == _REFUND:
            amount = -amount
        purchase = 1 if kind == _PURCHASE else 0
        if amount or purchase:
            state.win.append((at + policy.tier.window_us, amount, purchase, event.event_id))
            state.win_revenue = MONEY_CONTEXT.add(state.win_revenue, amount)
            state.win_purchases += purchase
        if amount:
            state.recent.append((at + policy.churn.trend_window_us, amount))
            state.recent_sum = MONEY_CONTEXT.add(state.recent_sum, amount)
            state.trend = -1
        if kind == _REFUND:
            return
        if purchase:
            if state.purchase_count == 0:
                state.first_purchase_us = at
            state.purchase_count += 1
            state.last_purchase_us = at
            state.last_purchase_id = event.event_id
            state.refresh_cadence()
        else:
            state.subs[str(facts.get("subscription_id", ""))] = at
            state.ever_subscribed = True
            state.cancel_until = None
            if kind == _SUB_RENEWED:
                state.renewal_count += 1
        state.last_commerce_us = at
        state.last_commerce_id = event.event_id
        state.cancel_risk = False
    elif kind == _SUB_CANCELLED:
        state.subs.pop(str(facts.get("subscription_id", "")), None)
        state.cancel_until = at + policy.churn.cancel_window_us
        state.cancel_id = event.event_id
        if not state.subs:
            state.cancel_risk = True
    elif kind == Kind.PAYMENT_FAILED:
        state.payments.append((at + policy.churn.payment_window_us, event.event_id))
    elif kind == Kind.SUPPORT_TICKET_OPENED:
        priority = str(facts.get("priority") or "normal")
        sla = policy.churn.ticket_sla_us.get(priority, policy.churn.ticket_sla_us["normal"])
        ticket_id = str(facts.get("ticket_id", event.event_id))
        _forget_ticket(state, state.tickets.get(ticket_id))
        state.tickets[ticket_id] = (at + sla, priority, event.event_id)
        insort(state.ticket_dues, at + sla)
        state.ticket_rev += 1
    elif kind == Kind.SUPPORT_TICKET_RESOLVED:
        _forget_ticket(state, state.tickets.pop(str(facts.get("ticket_id", "")), None))
        state.ticket_rev += 1
    elif kind == Kind.COMPLAINT:
        units = policy.churn.complaint_high_factor if facts.get("severity") == "high" else 1
        state.complaints.append((at + policy.churn.complaint_window_us, units, event.event_id))
        state.complaint_units += units
    elif kind == Kind.SURVEY_RESPONSE:
        score = facts.get("score")
        if isinstance(score, int) and not isinstance(score, bool):
            state.survey = (at + policy.churn.nps_window_us, score, event.event_id)


def _forget_ticket(state: CustomerState, ticket: tuple[int, str, str] | None) -> None:
    if ticket is not None:
        dues = state.ticket_dues
        del dues[bisect_left(dues, ticket[0])]


def _base_amount(state: CustomerState, event: InputEvent, at: int) -> Decimal:
    """The event's amount in the base currency; 0 (and noted) when it cannot be converted."""
    amount, currency = event.amount, event.currency
    if amount is None or currency is None:
        return Decimal(0)
    policy = state.policy
    if currency == policy.base_currency:
        return amount
    days = policy.fx_days.get(currency)
    if not days:
        state.fx_excluded[currency] = state.fx_excluded.get(currency, 0) + 1
        return Decimal(0)
    index = bisect_right(days, at) - 1  # as Policy.convert, without its explanation
    if index < 0:
        index = 0
        state.fx_fallbacks += 1
    return MONEY_CONTEXT.multiply(amount, policy.fx[currency][index].rate)


def prune(state: CustomerState, t: int) -> None:
    """Drop what has left its window by ``t`` (an item expiring at ``t`` no longer counts)."""
    prune_windows(state, t)
    subs = state.subs
    if subs:
        lapse = state.policy.lifecycle.subscription_lapse_us
        if min(subs.values()) + lapse <= t:
            for sub, since in list(subs.items()):
                if since + lapse <= t:
                    del subs[sub]


TIER_MOVED: Final = 1

SCORE_MOVED: Final = 2


def prune_windows(state: CustomerState, t: int) -> int:
    """The windowed part of :func:`prune`; says what moved (``TIER_MOVED | SCORE_MOVED``)."""
    moved = 0
    win = state.win
    if win and win[0][0] <= t:
        moved = TIER_MOVED
        revenue, purchases = state.win_revenue, state.win_purchases
        while win and win[0][0] <= t:
            _, amount, purchase, _ = win.popleft()
            revenue = MONEY_CONTEXT.subtract(revenue, amount)
            purchases -= purchase
        state.win_revenue, state.win_purchases = revenue, purchases
    recent, prior = state.recent, state.prior
    if (recent and recent[0][0] <= t) or (prior and prior[0][0] <= t):
        moved |= _prune_trend(state, t)
    complaints = state.complaints
    if complaints and complaints[0][0] <= t:
        moved |= SCORE_MOVED
        while complaints and complaints[0][0] <= t:
            state.complaint_units -= complaints.popleft()[1]
    payments = state.payments
    if payments and payments[0][0] <= t:
        moved |= SCORE_MOVED
        while payments and payments[0][0] <= t:
            payments.popleft()
    if state.survey is not None and state.survey[0] <= t:
        moved |= SCORE_MOVED
        state.survey = None
    if state.cancel_until is not None and state.cancel_until <= t:
        moved |= SCORE_MOVED
        state.cancel_until = None
    if moved & SCORE_MOVED:
        state.other_base = -1
    return moved


def _prune_trend(state: CustomerState, t: int) -> int:
    """Move spend from the recent to the prior half-year window and drop what left it;
    ``SCORE_MOVED`` only if the trend points changed."""
    moved = 0
    recent, prior = state.recent, state.prior
    before = state.trend
    state.trend = -1
    churn = state.policy.churn
    window = churn.trend_window_us
    while recent and recent[0][0] <= t:
        start, amount = recent.popleft()
        state.recent_sum = MONEY_CONTEXT.subtract(state.recent_sum, amount)
        prior.append((start + window, amount))
        state.prior_sum = MONEY_CONTEXT.add(state.prior_sum, amount)
    while prior and prior[0][0] <= t:
        _, amount = prior.popleft()
        state.prior_sum = MONEY_CONTEXT.subtract(state.prior_sum, amount)
    if before < 0 or signals.trend_centi(state, churn) != before:
        moved |= SCORE_MOVED  # the sums moved, but the score only if the points did
    return moved
