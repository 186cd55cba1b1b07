"""Fold throughput for a realistic event mix, in order, on one core (measured, printed).

Run with ``-s`` to see the figure; the target is >= 100,000 events/s.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy
from tests.unit.quality.simulate import at, event

MIX = [
    ("visit", 30),
    ("login", 15),
    ("email_opened", 12),
    ("email_clicked", 4),
    ("purchase", 20),
    ("refund", 2),
    ("support_ticket_opened", 3),
    ("support_ticket_resolved", 3),
    ("complaint", 1),
    ("survey_response", 2),
    ("payment_failed", 1),
    ("subscription_renewed", 5),
    ("profile_updated", 2),
]


def realistic_history(customer: int, size: int, rng: random.Random) -> list[InputEvent]:
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    events = []
    day = 0.0
    last_ticket = 0
    for n in range(size):
        day += rng.expovariate(1 / 3.0)
        kind = rng.choice(kinds)
        event_id = f"c{customer}-{n}"
        if kind in ("purchase", "refund"):
            amount = str(Decimal(rng.randint(500, 30000)) / 100)
            currency = rng.choice(["USD", "USD", "EUR", "GBP"])
            events.append(event(event_id, kind, at(day), amount=amount, currency=currency))
        else:
            ticket = f"t{n}" if kind == "support_ticket_opened" else f"t{last_ticket}"
            if kind == "support_ticket_opened":
                last_ticket = n
            facts = {"ticket_id": ticket, "score": rng.randint(0, 10), "subscription_id": "s"}
            events.append(event(event_id, kind, at(day), **facts))
    return events


def test_fold_throughput_is_measured_for_a_realistic_mix() -> None:
    policy = load_policy(default_policy_text())
    rng = random.Random(5)
    histories = [realistic_history(n, 500, rng) for n in range(100)]
    total = sum(len(h) for h in histories)
    started = time.perf_counter()
    for n, history in enumerate(histories):
        fold(f"c{n}", history, policy, as_of=history[-1].occurred_at)
    elapsed = time.perf_counter() - started
    print(f"fold: {total} events in {elapsed:.3f}s = {total / elapsed:,.0f} events/s")
    assert total == 50_000
