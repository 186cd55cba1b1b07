"""Deterministic synthetic interactions, as upstream systems would send them.

Seeded, so the same arguments always give the same bytes: the bundled sample, the
benchmarks and the tests all come from here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
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


def start_of_day(instant: datetime) -> datetime:
    """00:00 UTC of ``instant``'s day: where a simulation ends by default (`eventcrm
    simulate`, the demo), so a run's history lines up on whole days."""
    return instant.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


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
    # Long histories buy more often, so that no history starts before ~10 years ago.
    cadence = min(rng.choice([3, 7, 14, 30, 60]), max(1, 3650 // per_customer))
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


# --- behavioural simulation ---------------------------------------------------------

PERSONAS: tuple[tuple[str, float], ...] = (
    # (persona, share of the population)
    ("steady_big_spender", 0.10),
    ("regular", 0.25),
    ("occasional", 0.20),
    ("declining", 0.12),
    ("complaint_churner", 0.08),
    ("subscription_canceller", 0.08),
    ("reactivator", 0.07),
    ("prospect", 0.10),
)


@dataclass(frozen=True, slots=True)
class Fate:
    """What really happens to a simulated customer: the label quality checks score against."""

    customer_id: str
    persona: str
    churned: bool
    churned_at: datetime | None
    """When the customer's last purchase happened, for those who churn."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "persona": self.persona,
            "churned": self.churned,
            "churned_at": None if self.churned_at is None else self.churned_at.isoformat(),
        }


@dataclass
class Simulation:
    """A population's interactions (in publish order) and each customer's true fate."""

    interactions: list[dict[str, Any]]
    fates: list[Fate]


def _persona(rng: random.Random) -> str:
    roll = rng.random()
    for name, share in PERSONAS:
        if roll < share:
            return name
        roll -= share
    return PERSONAS[-1][0]


class _Customer:
    """Builds one simulated customer's wire interactions."""

    def __init__(self, rng: random.Random, n: int, prefix: str, end: datetime) -> None:
        self.rng = rng
        self.end = end
        self.n = n
        self.customer_id = f"{prefix}{n:05d}"
        self.country, self.language, self.zone, self.currency = rng.choice(COUNTRIES)
        self.offset = rng.choice([-5, 0, 1, 2, 9])
        self.seq = 0
        self.out: list[dict[str, Any]] = []

    def emit(self, kind: str, at: datetime, **fields: Any) -> None:
        if at > self.end:
            return
        self.seq += 1
        self.out.append(
            {
                "event_id": f"{self.customer_id}-{self.seq}",
                "source": _SOURCES.get(kind, "crm"),
                "customer_id": self.customer_id,
                "kind": kind,
                "occurred_at": _stamp(at, self.offset),
                **fields,
            }
        )

    def register(self, at: datetime) -> None:
        name = f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"
        self.emit(
            "registered",
            at,
            profile={
                "name": name,
                "email": f"{name.lower().replace(' ', '.')}.{self.n}@example.com",
                "phone": f"+4930{self.rng.randrange(10**7, 10**8)}",
                "country": self.country,
                "language": self.language,
                "timezone": self.zone,
            },
        )

    def purchase(self, at: datetime, scale: float) -> None:
        self.emit(
            "purchase",
            at,
            amount=_amount(self.rng, self.currency, 10 * scale, 120 * scale),
            currency=self.currency,
            order_id=f"o-{self.customer_id}-{self.seq + 1}",
        )

    def experience(self, at: datetime) -> None:
        """The support and survey traffic of an ordinary purchase: now and then a
        ticket, a complaint, or a survey answer from the whole NPS range (about a fifth
        of answers are detractors in published retail benchmarks)."""
        rng = self.rng
        if rng.random() < 0.03:
            ticket = f"t-{self.customer_id}-{self.seq + 1}"
            opened = at + _days(rng.uniform(0, 20))
            self.emit("support_ticket_opened", opened, ticket_id=ticket, priority="normal")
            if rng.random() < 0.85:
                self.emit("support_ticket_resolved", opened + _days(rng.uniform(0.2, 8)),
                          ticket_id=ticket)  # fmt: skip
        if rng.random() < 0.015:
            self.emit("complaint", at + _days(rng.uniform(0, 20)),
                      severity=rng.choice(["high", "low", "low"]))  # fmt: skip
        if rng.random() < 0.06:
            score = rng.choice([0, 2, 4, 5, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10])
            self.emit("survey_response", at + _days(rng.uniform(1, 10)), score=score)

    def engagement(self, at: datetime) -> None:
        kind = self.rng.choice(["login", "visit", "email_opened", "email_clicked"])
        fields: dict[str, Any] = {
            "login": {"channel": self.rng.choice(["web", "app"])},
            "visit": {"page": self.rng.choice(["/", "/pricing", "/catalog"])},
            "email_opened": {"campaign_id": f"c-{self.rng.randrange(40)}"},
            "email_clicked": {"campaign_id": f"c-{self.rng.randrange(40)}", "link": "/offer"},
        }[kind]
        self.emit(kind, at, **fields)


_SOURCES = {
    "purchase": "shop",
    "refund": "shop",
    "subscription_started": "billing",
    "subscription_renewed": "billing",
    "subscription_cancelled": "billing",
    "payment_failed": "billing",
    "support_ticket_opened": "helpdesk",
    "support_ticket_resolved": "helpdesk",
    "complaint": "helpdesk",
    "survey_response": "survey",
    "login": "app",
    "visit": "web",
    "email_opened": "marketing",
    "email_clicked": "marketing",
}


def _days(value: float) -> timedelta:
    return timedelta(days=value)


def _simulate_one(  # noqa: PLR0912, PLR0915 - one readable script per persona
    rng: random.Random, n: int, persona: str, *, begin: datetime, end: datetime, prefix: str
) -> tuple[list[dict[str, Any]], Fate]:
    c = _Customer(rng, n, prefix, end)
    span = (end - begin).days
    start = begin + _days(rng.uniform(0, span * 0.35))
    c.register(start)
    churned_at: datetime | None = None
    moment = start
    if persona == "prospect":
        while (moment := moment + _days(rng.expovariate(1 / 20))) < end:
            c.engagement(moment)
        return c.out, Fate(c.customer_id, persona, churned=False, churned_at=None)

    if persona == "subscription_canceller":
        sub = f"s-{c.customer_id}"
        c.emit(
            "subscription_started",
            moment,
            subscription_id=sub,
            plan="pro",
            amount=_amount(rng, c.currency, 20, 40),
            currency=c.currency,
        )
        months = rng.randrange(2, 8)
        for month in range(1, months + 1):
            moment = start + _days(30 * month)
            if moment >= end:
                break
            if month == months - 1:
                c.emit("payment_failed", moment, subscription_id=sub, reason="card_declined")
            c.emit(
                "subscription_renewed",
                moment,
                subscription_id=sub,
                plan="pro",
                amount=_amount(rng, c.currency, 20, 40),
                currency=c.currency,
            )
            c.purchase(moment + _days(rng.uniform(0, 3)), 0.5)
            churned_at = moment
        cancel_at = moment + _days(rng.uniform(1, 10))
        if cancel_at < end:
            c.emit("subscription_cancelled", cancel_at, subscription_id=sub, reason="too_expensive")
        # A cancellation is a strong signal, not a verdict: about a third come back
        # (a new plan or a purchase a few weeks later), as win-back reports show.
        if rng.random() < 0.35:
            back = cancel_at + _days(rng.uniform(14, 120))
            if back < end:
                c.emit(
                    "subscription_started",
                    back,
                    subscription_id=f"{sub}-2",
                    plan="basic",
                    amount=_amount(rng, c.currency, 10, 25),
                    currency=c.currency,
                )
                c.purchase(back + _days(rng.uniform(0, 5)), 0.5)
                return c.out, Fate(c.customer_id, persona, churned=False, churned_at=None)
        return c.out, Fate(c.customer_id, persona, churned=True, churned_at=churned_at)

    cadence = {
        "steady_big_spender": rng.uniform(5, 12),
        "regular": rng.uniform(10, 30),
        "occasional": rng.uniform(40, 90),
        "declining": rng.uniform(7, 20),
        "complaint_churner": rng.uniform(7, 25),
        "reactivator": rng.uniform(10, 25),
    }[persona]
    scale = 4.0 if persona == "steady_big_spender" else 1.0
    stop = end
    if persona in {"declining", "complaint_churner"}:
        stop = start + _days(rng.uniform(0.3, 0.85) * (end - start).days)
    silence: tuple[datetime, datetime] | None = None
    if persona == "reactivator":
        gap_start = start + _days(rng.uniform(0.15, 0.45) * (end - start).days)
        silence = (gap_start, gap_start + _days(cadence * rng.uniform(6, 10)))
    gap = cadence
    while True:
        moment += _days(rng.expovariate(1 / gap))
        if silence is not None and silence[0] <= moment < silence[1]:
            moment = silence[1]
            c.emit("email_clicked", moment - _days(1), campaign_id="winback", link="/offer")
        if moment >= stop or moment >= end:
            break
        c.purchase(moment, scale)
        churned_at = moment
        if rng.random() < 0.3:
            c.engagement(moment + _days(rng.uniform(0, 2)))
        if rng.random() < 0.04:
            c.emit(
                "refund",
                moment + _days(rng.uniform(1, 10)),
                amount=_amount(rng, c.currency, 5, 30),
                currency=c.currency,
            )
        c.experience(moment)
        if persona == "declining":
            gap *= 1.15
            scale *= 0.93
    if persona == "complaint_churner" and stop < end:
        # A bad experience before leaving, at lead times that vary from customer to
        # customer, and not every signal every time: a score must not learn a fixed
        # countdown. Satisfied customers complain and answer as detractors too
        # (`experience`), so these signals raise the odds without giving the label away.
        ticket = f"t-{c.customer_id}"
        if rng.random() < 0.8:
            c.emit("support_ticket_opened", stop - _days(rng.uniform(3, 60)), ticket_id=ticket,
                   priority=rng.choice(["high", "normal"]))  # fmt: skip
        if rng.random() < 0.7:
            c.emit("complaint", stop - _days(rng.uniform(0, 45)), ticket_id=ticket,
                   severity=rng.choice(["high", "low"]))  # fmt: skip
        if rng.random() < 0.6:
            c.emit("survey_response", stop - _days(rng.uniform(0, 40)), score=rng.randrange(0, 7))
    churned = persona in {"declining", "complaint_churner"}
    return c.out, Fate(
        c.customer_id, persona, churned=churned, churned_at=churned_at if churned else None
    )


def simulate(
    *,
    customers: int,
    seed: int,
    end: datetime,
    days: int = 365,
    prefix: str = "sim-",
    late_share: float = 0.02,
    duplicate_share: float = 0.01,
) -> Simulation:
    """A deterministic population over `days` before `end`: the same arguments always
    give the same interactions. Publish order is by time, except `late_share` of the
    events, which arrive late (out of order), and `duplicate_share`, sent twice (an
    upstream retry)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    begin = end - timedelta(days=days)
    events: list[tuple[datetime, int, dict[str, Any]]] = []
    fates: list[Fate] = []
    serial = 0
    for n in range(customers):
        persona = _persona(rng)
        out, fate = _simulate_one(rng, n, persona, begin=begin, end=end, prefix=prefix)
        fates.append(fate)
        for item in out:
            arrival = datetime.fromisoformat(item["occurred_at"])
            if rng.random() < late_share:
                arrival += _days(rng.uniform(1, 20))
            events.append((min(arrival, end), serial, item))
            serial += 1
            if rng.random() < duplicate_share:
                events.append((min(arrival + _days(rng.uniform(0, 2)), end), serial, item))
                serial += 1
    events.sort(key=lambda entry: (entry[0], entry[1]))
    return Simulation([item for _, _, item in events], fates)
