"""Deterministic synthetic interactions, as upstream systems would send them.

Seeded, so the same arguments always give the same bytes: the bundled sample, the
benchmarks and the tests all come from here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

CURRENCIES = {"EUR": 2, "USD": 2, "GBP": 2, "JPY": 0, "BRL": 2, "CHF": 2}
COUNTRIES = [
    ("DE", "de", "Europe/Berlin", "EUR"),
    ("US", "en", "America/New_York", "USD"),
    ("GB", "en", "Europe/London", "GBP"),
    ("JP", "ja", "Asia/Tokyo", "JPY"),
    ("BR", "pt-BR", "America/Sao_Paulo", "BRL"),
    ("CH", "de", "Europe/Zurich", "CHF"),
]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def _stamp(moment: datetime, offset_hours: int) -> str:
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def _amount(rng: random.Random, currency: str, low: float, high: float) -> str:
    digits = CURRENCIES[currency]
    scale = 100 if currency == "JPY" else 1
    value = rng.uniform(low, high) * scale
    return f"{value:.{digits}f}"


def interactions(
    *, customers: int, per_customer: int, seed: int = 7, start: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Exactly `customers * per_customer` interactions, each history ending near `start`."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    end = start or datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(customers):
        yield from _history(rng, n, per_customer, end)


def _history(
    rng: random.Random, n: int, per_customer: int, end: datetime
) -> Iterator[dict[str, Any]]:
    customer_id = f"cust-{n:05d}"
    country, language, zone, currency = COUNTRIES[n % len(COUNTRIES)]
    offset = rng.choice([-5, 0, 1, 2, 9])
    cadence = rng.choice([3, 7, 14, 30, 60])
    # Each history is sized to end around `end`, so every customer gets all its events.
    moment = end - timedelta(days=cadence * per_customer, minutes=rng.randrange(60 * 24 * 30))
    seq = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {
            "event_id": f"{customer_id}-{seq}",
            "source": "shop" if kind in {"purchase", "refund"} else "crm",
            "customer_id": customer_id,
            "kind": kind,
            "occurred_at": _stamp(min(moment, end), offset),
            **fields,
        }

    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    yield event(
        "registered",
        profile={
            "name": name,
            "email": f"{name.lower().replace(' ', '.')}.{n}@example.com",
            "phone": f"+4930{rng.randrange(10**7, 10**8)}",
            "country": country,
            "language": language,
            "timezone": zone,
        },
    )
    for _ in range(per_customer - 1):
        moment += timedelta(days=rng.expovariate(1 / cadence), minutes=rng.randrange(600))
        roll = rng.random()
        if roll < 0.55:
            yield event(
                "purchase",
                amount=_amount(rng, currency, 5, 400),
                currency=currency,
                order_id=f"o-{n}-{seq}",
            )
        elif roll < 0.60:
            yield event("refund", amount=_amount(rng, currency, 5, 50), currency=currency)
        elif roll < 0.75:
            yield event("login", channel=rng.choice(["web", "app"]))
        elif roll < 0.85:
            yield event("email_opened", campaign_id=f"c-{rng.randrange(40)}")
        elif roll < 0.90:
            yield event("support_ticket_opened", ticket_id=f"t-{n}-{seq}", priority="normal")
        elif roll < 0.95:
            yield event("survey_response", score=rng.randrange(11))
        else:
            yield event("visit", page="/pricing")
