"""`eventcrm backtest`: what a policy would have told ops over a stretch of history.

Every customer's stored history is replayed under the policy (and, in shadow, under a
second one) from its first event to ``end``. From the replay come the alerts it would
have raised, and the customers' scores at monthly cutoffs; from the history itself
come the outcomes: did the customer buy or renew within the horizon after each alert
and cutoff. Definitions (also in docs/churn-model.md):

* **alerts**: alerts raised (opened) between ``start`` and ``end``;
* **precision**: of the alerts raised by ``end - horizon`` (their outcome is known), the
  share whose customer then made no purchase or renewal within the horizon;
* **recall**: of the churn episodes (a purchase or renewal followed by a whole horizon
  without one, the horizon ending between ``start`` and ``end``), the share with an
  alert open at some point after that last purchase (and before any next one);
* **lead time**: for each detected episode, from the first instant an alert was open in
  it to the end of its horizon (when "no purchase within the horizon" became a fact);
  negative when the alert came only after that;
* **auc / average_precision**: of the churn score at each cutoff (every ``step`` days
  from ``start`` to ``end - horizon``) against "no purchase or renewal within the
  horizon", over every customer who had bought by then.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.calibration import metrics
from adapters.calibration.dataset import DAY_SECONDS, commerce_instants
from projections import (
    Change,
    InputEvent,
    Policy,
    churn_inputs,
    fold_through,
    score_steps,
    snapshot,
)

_CLOSING = frozenset({"resolved", "auto_resolved", "closed"})


@dataclass(frozen=True, slots=True)
class BacktestWindow:
    start: datetime
    end: datetime
    horizon_days: int = 90
    step_days: int = 30
    sample: int = 10
    """How many differing customers to show with their reasons."""

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.horizon_days)

    def cutoffs(self) -> list[datetime]:
        found, at = [], self.start
        while at + self.horizon <= self.end:
            found.append(at)
            at += timedelta(days=self.step_days)
        return found


@dataclass
class _Tally:
    """One policy's running figures over the customers replayed so far."""

    policy: Policy
    raised: Counter[str] = field(default_factory=Counter)
    judged_alerts: int = 0
    true_alerts: int = 0
    episodes: int = 0
    detected: int = 0
    leads: list[float] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    tiers: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)

    def result(self) -> dict[str, Any]:
        judged = self.judged_alerts
        return {
            "version": self.policy.version,
            "alerts": sum(self.raised.values()),
            "alerts_by_level": dict(sorted(self.raised.items())),
            "precision": self.true_alerts / judged if judged else None,
            "alerts_judged": judged,
            "recall": self.detected / self.episodes if self.episodes else None,
            "churn_episodes": self.episodes,
            "auc": _finite(metrics.roc_auc(self.scores, self.labels)),
            "average_precision": _finite(metrics.average_precision(self.scores, self.labels)),
            "scored_snapshots": len(self.scores),
            "median_lead_days": round(statistics.median(self.leads), 2) if self.leads else None,
            "tiers": dict(sorted(self.tiers.items())),
            "stages": dict(sorted(self.stages.items())),
            "churn_levels": dict(sorted(self.levels.items())),
        }


def _finite(value: float) -> float | None:
    return None if value != value else value  # noqa: PLR0124 - NaN check without math


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One customer under one policy at ``end``, and the alert intervals of the replay."""

    tier: str
    stage: str
    alert: str
    level: str
    score: float
    reasons: list[dict[str, Any]]


def backtest(
    histories: Iterable[tuple[str, Sequence[InputEvent]]],
    policy: Policy,
    window: BacktestWindow,
    *,
    against: Policy | None = None,
) -> dict[str, Any]:
    tallies = [_Tally(policy)] + ([_Tally(against)] if against is not None else [])
    cutoffs = window.cutoffs()
    differing = 0
    sample: list[dict[str, Any]] = []
    customers = 0
    for customer_id, events in histories:
        known = [e for e in events if e.occurred_at <= window.end]
        if not known:
            continue
        customers += 1
        commerce = commerce_instants(known)
        outcomes = [
            _replay(
                tally,
                customer_id=customer_id,
                events=known,
                commerce=commerce,
                cutoffs=cutoffs,
                window=window,
            )
            for tally in tallies
        ]
        if against is not None:
            mine, theirs = outcomes
            if (mine.tier, mine.stage, mine.alert) != (theirs.tier, theirs.stage, theirs.alert):
                differing += 1
                if len(sample) < window.sample:
                    sample.append(_difference(customer_id, mine, theirs))
    result: dict[str, Any] = {
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
        "horizon_days": window.horizon_days,
        "customers": customers,
        "policy": tallies[0].result(),
    }
    if against is not None:
        result["against"] = tallies[1].result()
        result["differing_customers"] = differing
        result["differences"] = sample
    return result


def _difference(customer_id: str, mine: _Outcome, theirs: _Outcome) -> dict[str, Any]:
    def side(outcome: _Outcome) -> dict[str, Any]:
        return {
            "tier": outcome.tier,
            "stage": outcome.stage,
            "alert_state": outcome.alert,
            "churn_score": outcome.score,
            "churn_level": outcome.level,
            "reasons": outcome.reasons,
        }

    return {"customer_id": customer_id, "policy": side(mine), "against": side(theirs)}


def _replay(
    tally: _Tally,
    *,
    customer_id: str,
    events: Sequence[InputEvent],
    commerce: list[datetime],
    cutoffs: list[datetime],
    window: BacktestWindow,
) -> _Outcome:
    opened: list[tuple[datetime, str]] = []
    closed: list[datetime] = []

    def on_change(changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind != "alert":
                continue
            if change.from_value == "none":
                opened.append((change.effective_at, change.to_value))
            elif change.to_value in _CLOSING:
                closed.append(change.effective_at)

    instants = [*cutoffs, window.end]
    final = None
    for at, state in fold_through(customer_id, events, tally.policy, instants, on_change=on_change):
        if at == window.end:
            final = snapshot(state)
            continue
        inputs = churn_inputs(state, at)
        if inputs is None:
            continue
        tally.scores.append(score_steps(tally.policy, inputs))
        tally.labels.append(not _bought_within(commerce, at, window.horizon))
    assert final is not None
    _alerts(tally, opened, closed, commerce, window)
    tally.tiers[final.tier] += 1
    tally.stages[final.lifecycle_stage] += 1
    tally.levels[final.churn_level] += 1
    top = sorted(final.churn_signals, key=lambda r: -abs(r.points or Decimal(0)))[:4]
    return _Outcome(
        final.tier,
        final.lifecycle_stage,
        final.alert_state,
        final.churn_level,
        float(final.churn_score),
        [r.to_dict() for r in top],
    )


def _bought_within(commerce: list[datetime], at: datetime, horizon: timedelta) -> bool:
    index = bisect_right(commerce, at)
    return index < len(commerce) and commerce[index] <= at + horizon


def _alerts(
    tally: _Tally,
    opened: list[tuple[datetime, str]],
    closed: list[datetime],
    commerce: list[datetime],
    window: BacktestWindow,
) -> None:
    horizon = window.horizon
    intervals = []
    for at, status in opened:
        end = next((c for c in closed if c >= at), window.end)
        intervals.append((at, end))
        if window.start <= at <= window.end:
            tally.raised["critical" if status == "escalated" else "warning"] += 1
            if at + horizon <= window.end:
                tally.judged_alerts += 1
                tally.true_alerts += not _bought_within(commerce, at, horizon)
    for n, last in enumerate(commerce):
        following = commerce[n + 1] if n + 1 < len(commerce) else None
        confirmed = last + horizon
        if (following is not None and following <= confirmed) or not (
            window.start <= confirmed <= window.end
        ):
            continue
        tally.episodes += 1
        until = following or window.end
        first_open = min(
            (max(a, last) for a, b in intervals if a < until and b > last), default=None
        )
        if first_open is not None:
            tally.detected += 1
            tally.leads.append((confirmed - first_open).total_seconds() / DAY_SECONDS)
