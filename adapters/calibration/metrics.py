"""How well a score ranks and how honest its probabilities are: the figures ops read.

All functions take plain sequences (or numpy arrays) of scores and boolean labels, where a
label is True for the outcome the score predicts (the customer churned).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC-AUC as the Mann–Whitney statistic: the chance that a random positive ranks
    above a random negative, ties counted one half. NaN when a class is missing."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision: the mean of the precision at each positive, walking down the
    ranking (tied scores are taken as one step, so the order within a tie does not matter)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    if not positives:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # the last index of each run of equal scores: precision is read there
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    hits = np.cumsum(y)[ends]
    seen = ends + 1
    gained = np.diff(np.r_[0, hits])
    return float(np.sum(gained * hits / seen) / positives)


def brier(probabilities: ArrayLike, labels: ArrayLike) -> float:
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    return float(np.mean((p - y) ** 2)) if len(p) else float("nan")


@dataclass(frozen=True, slots=True)
class Bin:
    """One bin of a reliability table: what the score said against what happened."""

    low: float
    high: float
    count: int
    predicted: float
    observed: float


def reliability(probabilities: ArrayLike, labels: ArrayLike, *, bins: int = 10) -> list[Bin]:
    """Predicted against observed churn in equal-width probability bins (empty bins are
    left out): a calibrated score has ``predicted ≈ observed`` in every bin."""
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            table.append(
                Bin(
                    float(edges[b]),
                    float(edges[b + 1]),
                    count,
                    float(p[mask].mean()),
                    float(y[mask].mean()),
                )
            )
    return table


def quintiles(values: ArrayLike) -> NDArray[np.int64]:
    """1–5 by rank (ties share the lower quintile), as RFM scoring does."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return np.zeros(0, dtype=np.int64)
    ranks = np.asarray(rankdata(v, method="min"), dtype=np.int64) - 1
    found: NDArray[np.int64] = np.minimum(5, 1 + (ranks * 5) // len(v)).astype(np.int64)
    return found


def rfm_risk(
    days_since: Sequence[float] | NDArray[np.float64],
    frequency: Sequence[float] | NDArray[np.float64],
    monetary: Sequence[float] | NDArray[np.float64],
) -> NDArray[np.int64]:
    """The classic RFM quintile score, oriented as a churn risk (3–15, higher = riskier):
    long since the last purchase, few purchases and little spend each add points."""
    return (
        quintiles(days_since)
        + quintiles(-np.asarray(frequency, dtype=float))
        + quintiles(-np.asarray(monetary, dtype=float))
    )
