"""The churn score ranks real-looking customers better than the baselines ops would use.

Populations from the buy-till-you-die models and the persona simulator are split in time:
calibration sees only the history up to 90 days before the end, the score is judged on
who bought in those 90 days (`adapters.calibration.quality`). `make quality` prints the
same comparison on larger populations and more seeds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime

from adapters.calibration.quality import Judgement, judge
from adapters.populations import as_histories
from adapters.simulate import simulate
from bench.quality import END, POPULATIONS
from infra.bootstrap import default_policy_text
from projections import load_policy

TEXT = default_policy_text()
BASE = load_policy(TEXT)


def judged(population: str, customers: int, seed: int) -> Judgement:
    histories = as_histories(POPULATIONS[population](customers, seed), now=END)
    return judge(histories, BASE, TEXT, end=END)


def lower_bound(values: list[float]) -> float:
    """The lower end of a 95 % confidence interval of the mean."""
    return statistics.fmean(values) - 1.96 * statistics.stdev(values) / len(values) ** 0.5


def test_on_a_buy_till_you_die_population_the_calibrated_score_beats_days_since_and_rfm() -> None:
    found = judged("bgnbd", 1500, seed=1)
    assert found.customers > 1000
    assert found.calibrated_auc > found.days_since_auc
    assert found.calibrated_auc > found.rfm_auc


def test_over_five_seeds_the_calibrated_score_beats_the_better_baseline_on_personas() -> None:
    runs = [judged("personas", 600, seed) for seed in range(1, 6)]
    margins = [run.margin for run in runs]
    assert lower_bound(margins) > 0, margins


def test_the_default_policy_ranks_at_least_like_days_since_on_every_population() -> None:
    personas = [judged("personas", 600, seed) for seed in range(1, 6)]
    assert lower_bound([r.previous_auc - r.days_since_auc for r in personas]) > 0
    for population, customers in (("bgnbd", 1500), ("pareto-nbd", 1500), ("bgnbd-frequent", 800)):
        found = judged(population, customers, seed=1)
        assert found.previous_auc >= found.days_since_auc, population


def test_the_simulator_gives_the_label_away_through_no_single_signal() -> None:
    end = datetime.fromisoformat("2026-06-01T00:00:00+00:00")
    result = simulate(customers=3000, seed=5, end=end, days=730)
    churned = {fate.customer_id: fate.churned for fate in result.fates}
    persona = {fate.customer_id: fate.persona for fate in result.fates}
    kinds: dict[str, Counter[str]] = {c: Counter() for c in churned}
    detractors: Counter[str] = Counter()
    for item in result.interactions:
        kinds[item["customer_id"]][item["kind"]] += 1
        if item["kind"] == "survey_response" and item["score"] <= 6:
            detractors[item["customer_id"]] += 1
    stayed = [c for c, gone in churned.items() if not gone]
    assert sum(1 for c in stayed if kinds[c]["complaint"]) > 20
    assert sum(1 for c in stayed if detractors[c]) > 20
    cancellers = [c for c in churned if persona[c] == "subscription_canceller"]
    assert 0 < sum(churned[c] for c in cancellers) < len(cancellers)
    complainers = [c for c in churned if persona[c] == "complaint_churner" and churned[c]]
    assert any(not kinds[c]["complaint"] for c in complainers)  # not every signal every time
