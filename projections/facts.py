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
from typing import Any, Final

from domain.interactions import Kind
from projections import churn as signals
from projections.model import ALERT_ACKNOWLEDGED, ALERT_RESOLVED, ALERT_SNOOZED, InputEvent
from projections.policy import MONEY_CONTEXT
from projections.signals import DAY_US
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
    state.static_base = None
    if kind == _REFUND:
        _refund(state, event, at)
    elif kind in (_PURCHASE, _SUB_STARTED, _SUB_RENEWED):
        amount, rate = _base_amount(state, event, at)
        purchase = 1 if kind == _PURCHASE else 0
        key = _order_key(event)
        state.orders[key] = (at, amount, event.currency, rate, bool(purchase))
        if amount or purchase:
            state.win.append((at + policy.tier.window_us, amount, purchase, event.event_id, key))
            state.win_revenue = MONEY_CONTEXT.add(state.win_revenue, amount)
            state.win_purchases += purchase
        if amount:
            state.recent.append((at + policy.churn.trend_window_us, amount))
            state.recent_sum = MONEY_CONTEXT.add(state.recent_sum, amount)
            state.trend = -1
        if purchase:
            if state.purchase_count == 0:
                state.first_purchase_us = at
            state.purchase_count += 1
            if at // DAY_US != state.purchase_day:
                state.purchase_day = at // DAY_US
                state.purchase_days += 1
            state.last_purchase_us = at
            state.last_purchase_id = event.event_id
            state.refresh_cadence()
        else:
            state.subs[str(facts.get("subscription_id", ""))] = at
            state.ever_subscribed = True
            state.cancel_until = None
            if kind == _SUB_RENEWED:
                state.renewal_count += 1
        if state.first_commerce_us is None:
            state.first_commerce_us = at
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
    elif kind == Kind.SUPPORT_TICKET_RESOLVED:
        _forget_ticket(state, state.tickets.pop(str(facts.get("ticket_id", "")), None))
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


def _order_key(event: InputEvent) -> str:
    order_id = event.facts.get("order_id")
    return f"order:{order_id}" if order_id else f"event:{event.event_id}"


def _base_amount(
    state: CustomerState, event: InputEvent, at: int
) -> tuple[Decimal, Decimal | None]:
    """The event's amount in the base currency, and the rate used (None: the base
    currency itself); 0 (and noted) when it cannot be converted."""
    amount, currency = event.amount, event.currency
    if amount is None or currency is None:
        return Decimal(0), None
    policy = state.policy
    if currency == policy.base_currency:
        return amount, None
    days = policy.fx_days.get(currency)
    if not days:
        state.fx_excluded[currency] = state.fx_excluded.get(currency, 0) + 1
        return Decimal(0), Decimal(0)
    index = bisect_right(days, at) - 1  # as Policy.convert, without its explanation
    if index < 0:
        index = 0
        state.fx_fallbacks += 1
    rate = policy.fx[currency][index].rate
    return MONEY_CONTEXT.multiply(amount, rate), rate


def _refund(state: CustomerState, event: InputEvent, at: int) -> None:
    """Net a refund against what it refunds, at that purchase's rate and in its windows.

    With an ``order_id`` naming a known purchase in the same currency, the refund takes
    that purchase's FX rate (a fully refunded foreign purchase leaves no residue) and
    counts only while the purchase does: once the purchase has left the trailing window
    its refund has nothing left to net against there. A fully refunded purchase no
    longer counts as a purchase for the tier. Without one, the refund (at its own
    date's rate) nets against the latest purchases still in the tier window; whatever is
    left refunds something older than the window and is not counted. So window revenue
    never goes negative.
    """
    order_id = event.facts.get("order_id")
    key = f"order:{order_id}" if order_id else ""
    order = state.orders.get(key) if key else None
    amount = event.amount or Decimal(0)
    if order is not None and order[2] == event.currency:
        rate = order[3]
        taken = amount if rate is None else MONEY_CONTEXT.multiply(amount, rate)
        _net(state, key=key, order=order, amount=taken, at=at, refund_id=event.event_id)
        return
    left, _ = _base_amount(state, event, at)
    for item in reversed(list(state.win)):
        if left <= 0:
            return
        found = state.orders.get(item[4])
        if found is None or found[1] <= 0 or item[1] <= 0:
            continue
        taken = min(left, found[1])
        _net(state, key=item[4], order=found, amount=taken, at=at, refund_id=event.event_id)
        left -= taken


def _net(
    state: CustomerState,
    *,
    key: str,
    order: tuple[int, Decimal, str | None, Decimal | None, bool],
    amount: Decimal,
    at: int,
    refund_id: str,
) -> None:
    purchased_at, remaining, currency, rate, is_purchase = order
    taken = min(amount, remaining)
    if taken <= 0:
        return
    left = MONEY_CONTEXT.subtract(remaining, taken)
    state.orders[key] = (purchased_at, left, currency, rate, is_purchase)
    policy = state.policy
    expiry = purchased_at + policy.tier.window_us
    if at < expiry:
        gone = -1 if is_purchase and left <= 0 else 0
        insort(state.win, (expiry, -taken, gone, refund_id, key), key=_EXPIRY)
        state.win_revenue = MONEY_CONTEXT.subtract(state.win_revenue, taken)
        state.win_purchases += gone
    window = policy.churn.trend_window_us
    if at < purchased_at + window:
        insort(state.recent, (purchased_at + window, -taken), key=_EXPIRY)
        state.recent_sum = MONEY_CONTEXT.subtract(state.recent_sum, taken)
        state.trend = -1
    elif at < purchased_at + 2 * window:
        insort(state.prior, (purchased_at + 2 * window, -taken), key=_EXPIRY)
        state.prior_sum = MONEY_CONTEXT.subtract(state.prior_sum, taken)
        state.trend = -1


def _expiry(item: tuple[Any, ...]) -> int:
    return int(item[0])


_EXPIRY: Final = _expiry


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
            state.static_base = None


TIER_MOVED: Final = 1

SCORE_MOVED: Final = 2


def prune_windows(state: CustomerState, t: int) -> int:
    """The windowed part of :func:`prune`; says what moved (``TIER_MOVED | SCORE_MOVED``)."""
    moved = 0
    win = state.win
    if win and win[0][0] <= t:
        moved = TIER_MOVED | SCORE_MOVED  # the window's revenue is also a churn signal
        revenue, purchases = state.win_revenue, state.win_purchases
        while win and win[0][0] <= t:
            _, amount, purchase, _, _ = win.popleft()
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
        state.static_base = None
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
    if before < 0 or signals.spend_drop(state, churn) != before:
        moved |= SCORE_MOVED  # the sums moved, but the score only if the drop did
    return moved
