"""Choosing the watch / warning / critical thresholds: an alert budget or a target precision.

An alert is only useful if ops can work through the queue, and only trusted if most of
them are right. So the thresholds are chosen on real customers' scores: so that at most a
given share of the active customers is at a level or above *now* (the budget: the
queue ops will actually see when the policy goes live), and, when a target precision is
set, so that the active customers at warning or above at the latest cutoff whose outcome
is known churned at least that often; whichever is stricter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LEVEL_NAMES = ("watch", "warning", "critical")
TOP = 1000
"""The highest score, in steps (100.0 points)."""


@dataclass(frozen=True, slots=True)
class LevelRule:
    """At most ``share`` of the active customers at this level or above (None: no budget)."""

    watch: float | None = 0.25
    warning: float | None = 0.10
    critical: float | None = 0.03
    target_precision: float | None = None
    """Customers at warning or above churn at least this often (None: no target)."""
    min_support: int = 20
    """A precision is only trusted over at least this many customers."""
    fixed: tuple[int, int, int] | None = None
    """Thresholds given in score steps (watch, warning, critical): only their figures are
    measured (how the packaged default records what its hand-set levels select)."""


@dataclass(frozen=True, slots=True)
class LevelFigures:
    score: int
    share_active: float
    precision: float
    recall: float
    customers: int


def _figures(
    score: int, now: NDArray[np.int64], judged: NDArray[np.int64], churned: NDArray[np.bool_]
) -> LevelFigures:
    """Share of the active customers at ``score`` or above now; precision and recall of
    that threshold at the latest cutoff whose outcome is known."""
    selected = judged >= score
    count = int(selected.sum())
    positives = int(churned.sum())
    hits = int((selected & churned).sum())
    return LevelFigures(
        score,
        float(np.mean(now >= score)) if len(now) else 0.0,
        hits / count if count else float("nan"),
        hits / positives if positives else float("nan"),
        int((now >= score).sum()),
    )


def _budget(share: float, scores: NDArray[np.int64]) -> int:
    """The lowest threshold that keeps at most ``share`` of the scores at or above it."""
    for threshold in range(1, TOP + 1):
        if np.mean(scores >= threshold) <= share:
            return threshold
    return TOP


def _precise(
    target: float, scores: NDArray[np.int64], churned: NDArray[np.bool_], support: int
) -> int | None:
    for threshold in range(1, TOP + 1):
        selected = scores >= threshold
        count = int(selected.sum())
        if count < support:
            return None
        if churned[selected].mean() >= target:
            return threshold
    return None


class LevelError(ValueError):
    """No thresholds satisfy the rule (too few customers, or an unreachable precision)."""


def choose_levels(
    now: NDArray[np.int64],
    judged: NDArray[np.int64],
    churned: NDArray[np.bool_],
    rule: LevelRule,
) -> dict[str, LevelFigures]:
    """Thresholds (score steps, ``watch < warning < critical``) from the active customers'
    scores ``now`` (the budget) and at the latest judged cutoff (``judged``, with their
    ``churned`` outcomes: the precision), and what each level selects."""
    if not len(now):
        raise LevelError("no active customers at --as-of to set alert levels on")
    if rule.fixed is not None:
        return {
            name: _figures(value, now, judged, churned)
            for name, value in zip(LEVEL_NAMES, rule.fixed, strict=True)
        }
    scores = now
    warning = _budget(rule.warning, scores) if rule.warning is not None else 1
    if rule.target_precision is not None:
        precise = _precise(rule.target_precision, judged, churned, rule.min_support)
        if precise is None:
            raise LevelError(
                f"no threshold reaches a precision of {rule.target_precision:.0%} over at least "
                f"{rule.min_support} customers; lower --target-precision or use a budget"
            )
        warning = max(warning, precise)
    warning = min(max(warning, 2), TOP - 1)
    critical = _budget(rule.critical, scores) if rule.critical is not None else TOP
    critical = min(max(critical, warning + 1), TOP)
    watch = _budget(rule.watch, scores) if rule.watch is not None else 1
    watch = max(1, min(watch, warning - 1))
    return {
        name: _figures(value, now, judged, churned)
        for name, value in zip(LEVEL_NAMES, (watch, warning, critical), strict=True)
    }
