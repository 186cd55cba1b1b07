"""The churn score ranks future non-buyers at least as well as days since the last purchase.

Run with ``-s`` to see both AUC figures.
"""

from __future__ import annotations

from infra.bootstrap import default_policy_text
from projections import fold, load_policy, snapshot
from tests.unit.quality.simulate import at, auc, simulate_customers

CUTOFF_DAYS = 600
HORIZON_DAYS = 120


def test_churn_score_ranks_future_non_buyers_at_least_as_well_as_days_since_purchase() -> None:
    seed = 2026
    policy = load_policy(default_policy_text())
    cutoff = at(CUTOFF_DAYS)
    scores: list[float] = []
    days_since: list[float] = []
    labels: list[bool] = []
    for customer in simulate_customers(3000, seed=seed):
        before = [e for e in customer.purchases if e.occurred_at <= cutoff]
        if not before:
            continue
        bought_again = any(
            cutoff < e.occurred_at <= at(CUTOFF_DAYS + HORIZON_DAYS) for e in customer.purchases
        )
        state = fold(customer.customer_id, before, policy, as_of=cutoff)
        scores.append(snapshot(state).churn_score)
        days_since.append((cutoff - before[-1].occurred_at).total_seconds() / 86_400)
        labels.append(not bought_again)

    score_auc, days_auc = auc(scores, labels), auc(days_since, labels)
    print(f"seed {seed}: churn score AUC {score_auc:.4f}, days-since AUC {days_auc:.4f}")
    assert 0.2 < sum(labels) / len(labels) < 0.8
    assert score_auc >= days_auc


def test_auc_counts_ties_as_half_and_orders_perfectly_separated_scores() -> None:
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert auc([1, 1, 1, 1], [False, True, False, True]) == 0.5
