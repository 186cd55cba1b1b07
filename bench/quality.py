"""Churn quality on every population: the calibrated score against the baselines.

For each population and seed, the history up to ``end - horizon`` is calibrated on
(``eventcrm calibrate``'s own code, on the events alone), and the customers are ranked at
that instant by the calibrated score, the packaged default policy, days since the last
purchase, and RFM quintiles, against "no purchase or renewal in the next 90 days".
The margin is the calibrated score's ROC-AUC minus the better of the two baselines; the
mean margin over seeds is printed with a 95 % confidence interval.

Populations: three from the buy-till-you-die models (`adapters.populations`) and the
persona simulator, with every signal and with purchases only. Run: ``make quality``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.calibration.quality import Judgement, judge
from adapters.populations import as_histories, simulate_population
from adapters.simulate import simulate
from infra.bootstrap import default_policy_text
from projections import load_policy

END = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 730


def _btyd(model: str) -> Callable[[int, int], list[dict[str, Any]]]:
    def make(customers: int, seed: int) -> list[dict[str, Any]]:
        return simulate_population(
            model, customers=customers, seed=seed, end=END, days=DAYS, acquisition_days=365
        ).interactions

    return make


def _personas(*, purchases_only: bool) -> Callable[[int, int], list[dict[str, Any]]]:
    def make(customers: int, seed: int) -> list[dict[str, Any]]:
        found = simulate(customers=customers, seed=seed, end=END, days=DAYS).interactions
        return [i for i in found if i["kind"] == "purchase"] if purchases_only else found

    return make


POPULATIONS: dict[str, Callable[[int, int], list[dict[str, Any]]]] = {
    "bgnbd": _btyd("bgnbd"),
    "pareto-nbd": _btyd("pareto-nbd"),
    "bgnbd-frequent": _btyd("bgnbd-frequent"),
    "personas": _personas(purchases_only=False),
    "personas-purchases": _personas(purchases_only=True),
}


def _interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:+.4f}"
    half = 1.96 * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:+.4f} ± {half:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", action="append", choices=sorted(POPULATIONS))
    args = parser.parse_args()
    text = default_policy_text()
    base = load_policy(text)
    print(
        f"{'quality':8} {'population':19} {'seed':>4} {'customers':>9} {'churn':>6} "
        f"{'calibrated':>10} {'default':>8} {'days-since':>10} {'rfm':>7} {'margin':>8}"
    )
    for name in args.population or list(POPULATIONS):
        margins: list[float] = []
        for seed in range(1, args.seeds + 1):
            started = time.perf_counter()
            histories = as_histories(POPULATIONS[name](args.customers, seed), now=END)
            j: Judgement = judge(histories, base, text, end=END)
            margins.append(j.margin)
            print(
                f"{'quality':8} {name:19} {seed:>4} {j.customers:>9} {j.churn_rate:>6.3f} "
                f"{j.calibrated_auc:>10.4f} {j.previous_auc:>8.4f} {j.days_since_auc:>10.4f} "
                f"{j.rfm_auc:>7.4f} {j.margin:>+8.4f}   # {time.perf_counter() - started:.0f} s"
            )
        print(f"{'quality':8} {name:19} mean margin over {len(margins)} seeds {_interval(margins)}")


if __name__ == "__main__":
    main()
