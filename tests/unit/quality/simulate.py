"""Simulated customers with known fates, and the Mann–Whitney AUC to judge a ranking.

Kept in the tests: the generator draws pseudo-random numbers (seeded, so runs repeat),
which has no place in the pure projection package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SimulatedCustomer:
    customer_id: str
    cadence_days: float
    churned_at: float | None
    purchases: tuple[InputEvent, ...]


def simulate_customers(
    count: int, *, seed: int, horizon_days: float = 900.0
) -> list[SimulatedCustomer]:
    """Purchase-only customers whose cadences differ by 10x (7 to 70 days, log-uniform).

    Every customer buys at jittered intervals around its own cadence; about half churn,
    meaning they stop buying for good at a uniformly random instant.
    """
    rng = random.Random(seed)
    customers = []
    for n in range(count):
        cadence = math.exp(rng.uniform(math.log(7), math.log(70)))
        start = rng.uniform(0, 200)
        churned_at = rng.uniform(start, horizon_days) if rng.random() < 0.5 else None
        end = horizon_days if churned_at is None else churned_at
        purchases: list[InputEvent] = []
        t = start
        while t <= end:
            amount = Decimal(rng.randint(2000, 20000)) / 100
            purchases.append(purchase(f"c{n}-p{len(purchases)}", at(t), str(amount)))
            t += cadence * rng.uniform(0.5, 1.5)
        customers.append(SimulatedCustomer(f"sim-{n}", cadence, churned_at, tuple(purchases)))
    return customers


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC-AUC as the Mann–Whitney statistic: P(positive ranks above negative), ties 1/2."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
