"""On the persona population of the simulator, from purchases alone, the churn score ranks
"no purchase in the next 90 days" at least as well as days since the last purchase.

The population mixes cadences (weekly big spenders to quarterly occasional buyers),
decliners, complaint-driven churners, subscription cancellers and reactivators, with
short histories (under a year): the case where one or two purchases must not define a
cadence. Run with ``-s`` to see both AUC figures. Deterministic (fixed seed).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from adapters.simulate import simulate
from domain.interactions import parse_interaction
from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy, snapshot
from tests.unit.quality.simulate import auc

END = datetime(2026, 6, 1, tzinfo=UTC)
CUT = END - timedelta(days=90)


def purchases_by_customer(customers: int, seed: int) -> dict[str, list[InputEvent]]:
    """Every customer's purchases (deduplicated, in time order), as the projections see them."""
    found: dict[str, dict[str, InputEvent]] = defaultdict(dict)
    for raw in simulate(customers=customers, seed=seed, end=END).interactions:
        if raw["kind"] != "purchase":
            continue
        item = parse_interaction(raw, now=END, max_future_skew=timedelta(0))
        key = f"{item.source}/{item.event_id}"
        assert item.money is not None
        found[item.customer_id][key] = InputEvent(
            event_id=key,
            version=1,
            kind=item.kind.value,
            occurred_at=item.occurred_at,
            amount=item.money.amount,
            currency=item.money.currency,
        )
    return {c: sorted(e.values(), key=lambda x: x.occurred_at) for c, e in found.items()}


def test_purchases_alone_rank_persona_churn_at_least_as_well_as_days_since_purchase() -> None:
    policy = load_policy(default_policy_text())
    scores: list[float] = []
    days_since: list[float] = []
    labels: list[bool] = []
    for customer_id, purchases in sorted(purchases_by_customer(1500, seed=11).items()):
        before = [e for e in purchases if e.occurred_at <= CUT]
        if not before:
            continue
        scores.append(snapshot(fold(customer_id, before, policy, as_of=CUT)).churn_score)
        days_since.append((CUT - before[-1].occurred_at).total_seconds())
        labels.append(not any(CUT < e.occurred_at <= END for e in purchases))

    score_auc, days_auc = auc(scores, labels), auc(days_since, labels)
    print(f"{len(labels)} customers: churn score AUC {score_auc:.4f}, days-since {days_auc:.4f}")
    assert len(labels) > 1000
    assert 0.2 < sum(labels) / len(labels) < 0.8
    assert score_auc >= days_auc
