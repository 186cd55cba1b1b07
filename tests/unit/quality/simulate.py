"""Test events for the projections: instants in days after a fixed start, and builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from projections import InputEvent

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    """An instant ``days`` after T0 (fractions allowed)."""
    return T0 + timedelta(days=days)


def event(
    event_id: str,
    kind: str,
    when: datetime | float,
    *,
    amount: str | None = None,
    currency: str | None = None,
    version: int = 0,
    **facts: Any,
) -> InputEvent:
    """A test event; ``when`` is an instant or days after T0."""
    instant = when if isinstance(when, datetime) else at(when)
    return InputEvent(
        event_id=event_id,
        version=version,
        kind=kind,
        occurred_at=instant,
        amount=None if amount is None else Decimal(amount),
        currency=currency,
        facts=facts,
    )


def purchase(
    event_id: str, when: datetime | float, amount: str = "100.00", currency: str = "USD"
) -> InputEvent:
    return event(event_id, "purchase", when, amount=amount, currency=currency)
