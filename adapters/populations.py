"""Purchase populations drawn from the published "buy till you die" models.

The persona simulator (:mod:`adapters.simulate`) tells stories the projections were
written for; judging the churn score only on it would grade the model on its own
assumptions. These populations come from models fitted to real purchase logs instead:

* **BG/NBD** (Fader, Hardie & Lee, "Counting your customers the easy way", Marketing
  Science 2005): while alive, a customer buys at a Poisson rate ``λ ~ Gamma(r, α)``;
  after each purchase they drop out for good with probability ``p ~ Beta(a, b)``
  (after *any* purchase, the first included, as in the modified BG/NBD of Batislam,
  Denizel & Filiztekin 2007). Parameters as fitted by Fader et al. to the CDNOW log:
  r 0.243, α 4.414 weeks, a 0.793, b 2.426. Most customers buy once.
* **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987), the same rates but an
  exponential lifetime ``μ ~ Gamma(s, β)`` independent of purchasing; parameters as
  fitted to CDNOW in the same paper: r 0.553, α 10.578, s 0.606, β 11.669 weeks.
* **BG/NBD, frequent buyers**: the BG/NBD structure with rates eight times higher and
  dropout a third as likely (a 0.793, b 7.3): a grocery-like population where most
  customers repeat. A variant, not a published fit; it checks the model where
  frequency carries the signal.

Spend per purchase follows the gamma-gamma model (Fader, Hardie & Lee, "RFM and CLV",
Journal of Marketing Research 2005; CDNOW fit p 6.25, q 3.74, γ 15.44): each customer's
mean spend is random, and each purchase scatters around it.

Seeded with :class:`random.Random`, whose streams are stable across Python releases, so
the same arguments always give the same interactions.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from adapters.simulate import Fate, Simulation
from domain.interactions import parse_interaction
from projections import InputEvent

_WEEK_DAYS: Final = 7.0


@dataclass(frozen=True, slots=True)
class BuyTillYouDie:
    """One population model: purchase rates, how customers die, and how they spend."""

    name: str
    r: float
    alpha_weeks: float
    dropout: tuple[float, float] | None
    """BG/NBD ``(a, b)``: dropout probability after each purchase ~ Beta(a, b)."""
    lifetime: tuple[float, float] | None
    """Pareto/NBD ``(s, β weeks)``: death rate ~ Gamma(s, β)."""
    spend: tuple[float, float, float] = (6.25, 3.74, 15.44)
    """Gamma-gamma ``(p, q, γ)`` in US dollars."""


POPULATIONS: Final[dict[str, BuyTillYouDie]] = {
    "bgnbd": BuyTillYouDie("bgnbd", 0.243, 4.414, (0.793, 2.426), None),
    "pareto-nbd": BuyTillYouDie("pareto-nbd", 0.553, 10.578, None, (0.606, 11.669)),
    "bgnbd-frequent": BuyTillYouDie("bgnbd-frequent", 0.243, 4.414 / 8, (0.793, 7.3), None),
}

_MARKETS: Final = (
    ("US", "USD", "1", -5),
    ("DE", "EUR", "0.92", 1),
    ("GB", "GBP", "0.79", 0),
    ("JP", "JPY", "150", 9),
)
"""(country, currency, units per US dollar, UTC offset of the shop): spend is drawn in
dollars and sent in the customer's currency and local time, as a global shop would."""


def simulate_population(
    model: str, *, customers: int, seed: int, end: datetime, days: int = 365,
    acquisition_days: int = 90, prefix: str = "btyd-",
) -> Simulation:  # fmt: skip
    """``customers`` acquired uniformly over the first ``acquisition_days`` of the
    ``days`` before ``end`` (each starts with a first purchase), followed until ``end``.

    A fate's ``churned`` says whether the customer dropped out before ``end`` and
    ``churned_at`` is their last purchase; labels for quality checks come from the
    purchases themselves (did they buy again within a horizon), not from fates.
    """
    spec = POPULATIONS[model]
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    begin = end - timedelta(days=days)
    out: list[tuple[datetime, int, dict[str, Any]]] = []
    fates: list[Fate] = []
    for n in range(customers):
        customer_id = f"{prefix}{n:05d}"
        country, currency, per_dollar, offset = _MARKETS[rng.randrange(len(_MARKETS))]
        zone = timezone(timedelta(hours=offset))
        times, churned = _purchase_days(
            rng, spec, start=rng.uniform(0, acquisition_days), days=days
        )
        p, q, gamma = spec.spend
        nu = rng.gammavariate(q, 1 / gamma)  # each purchase ~ Gamma(p, rate nu)
        registered = max(0.0, times[0] - rng.uniform(0, 3))
        items: list[tuple[float, str, dict[str, Any]]] = [
            (registered, "registered", {"profile": {"country": country}})
        ]
        for at_day in times:
            amount = _in_currency(rng.gammavariate(p, 1 / nu), currency, per_dollar)
            items.append((at_day, "purchase", {"amount": amount, "currency": currency}))
        for seq, (at_day, kind, fields) in enumerate(items, start=1):
            moment = begin + timedelta(days=at_day)
            if kind == "purchase":
                fields["order_id"] = f"o-{customer_id}-{seq}"
            item = {
                "event_id": f"{customer_id}-{seq}",
                "source": "shop",
                "customer_id": customer_id,
                "kind": kind,
                "occurred_at": moment.astimezone(zone).isoformat(),
                **fields,
            }
            out.append((moment, len(out), item))
        last = begin + timedelta(days=times[-1])
        fates.append(Fate(customer_id, spec.name, churned, last if churned else None))
    out.sort(key=lambda entry: (entry[0], entry[1]))
    return Simulation([item for _, _, item in out], fates)


def _purchase_days(
    rng: random.Random, spec: BuyTillYouDie, *, start: float, days: int
) -> tuple[list[float], bool]:
    """One customer's purchase instants (days after the start of the period) and whether
    they died before its end."""
    rate = rng.gammavariate(spec.r, 1 / spec.alpha_weeks) / _WEEK_DAYS  # per day
    dropout = rng.betavariate(*spec.dropout) if spec.dropout else 0.0
    death = math.inf
    if spec.lifetime is not None:
        s, beta_weeks = spec.lifetime
        death = start + rng.expovariate(rng.gammavariate(s, 1 / beta_weeks) / _WEEK_DAYS)
    times = [start]
    while True:
        if rng.random() < dropout:
            return times, True
        moment = times[-1] + (rng.expovariate(rate) if rate > 0 else math.inf)
        if moment > death:
            return times, death <= days
        if moment > days:
            return times, False
        times.append(moment)


def _in_currency(dollars: float, currency: str, per_dollar: str) -> str:
    value = max(dollars, 0.01) * float(per_dollar)
    if currency == "JPY":
        return f"{max(1, round(value))}"
    return f"{value:.2f}"


def as_histories(
    interactions: Iterable[Mapping[str, Any]], *, now: datetime
) -> list[tuple[str, list[InputEvent]]]:
    """Wire interactions as each customer's projection inputs (validated as the store
    would, deduplicated by ``(source, event_id)``, in time order): what the fold would see
    after importing them, without a database. For quality checks and benchmarks."""
    found: dict[str, dict[str, InputEvent]] = defaultdict(dict)
    for raw in interactions:
        item = parse_interaction(raw, now=now, max_future_skew=timedelta(0))
        key = f"{item.source}/{item.event_id}"
        found[item.customer_id][key] = InputEvent(
            event_id=key,
            version=0,
            kind=item.kind.value,
            occurred_at=item.occurred_at,
            amount=None if item.money is None else item.money.amount,
            currency=None if item.money is None else item.money.currency,
            facts=item.facts,
        )
    return [
        (customer, sorted(events.values(), key=lambda e: (e.occurred_at, e.event_id)))
        for customer, events in sorted(found.items())
    ]
