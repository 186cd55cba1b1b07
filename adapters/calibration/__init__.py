"""`eventcrm calibrate`: fit the churn model and its alert levels from the store's history.

The store is its own training set. Every customer is looked at as of several past
cutoffs, with the churn signals the fold computes there, and labelled by whether they
bought or renewed within the horizon after it (:mod:`.dataset`). The latest cutoff is
held out: a model fitted on the earlier ones is judged there against the two baselines
ops would otherwise use (days since the last purchase, RFM quintiles) and against the
policy being replaced. The model is then refitted on every cutoff (:mod:`.fit`), its
alert levels chosen for a budget or a precision (:mod:`.levels`), and written as a new
policy file with the training report inside (:mod:`.policyfile`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from adapters.calibration import metrics
from adapters.calibration.dataset import Snapshots, snapshot_rows
from adapters.calibration.fit import Fitted, Term, anchored, fit, log_loss, predict
from adapters.calibration.levels import LevelError, LevelFigures, LevelRule, choose_levels
from adapters.calibration.policyfile import write_policy
from projections import SIGNALS, InputEvent, Policy, as_points, load_policy, score_steps

__all__ = [
    "CalibrationError",
    "CalibrationOptions",
    "CalibrationResult",
    "LevelError",
    "LevelRule",
    "calibrate",
    "plan_cutoffs",
]


class CalibrationError(ValueError):
    """The history cannot support a fit (too short, too few customers or churners)."""


@dataclass(frozen=True, slots=True)
class CalibrationOptions:
    horizon_days: int = 90
    step_days: int = 30
    """Days between cutoffs."""
    max_cutoffs: int = 8
    levels: LevelRule = field(default_factory=LevelRule)
    l2_grid: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    """Ridge strengths tried; the one with the best held-out log-loss is kept."""
    min_rows: int = 100
    """Fewer rows than this at the held-out cutoff, or in training, is refused."""
    version: str | None = None
    """The new policy's version (default: derived from the as-of date and the weights)."""


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    policy_text: str
    policy: Policy
    report: dict[str, Any]


def plan_cutoffs(
    first_event: datetime, as_of: datetime, *, horizon_days: int, step_days: int, count: int
) -> list[datetime]:
    """Cutoffs from the latest one whose horizon still ends by ``as_of`` back in steps,
    none earlier than one step after the first event (oldest first)."""
    latest = as_of - timedelta(days=horizon_days)
    cutoffs = [latest - timedelta(days=step_days * k) for k in range(count)]
    return sorted(c for c in cutoffs if c >= first_event + timedelta(days=step_days))


def calibrate(
    histories: Iterable[tuple[str, Sequence[InputEvent]]],
    base: Policy,
    base_text: str,
    *,
    as_of: datetime,
    options: CalibrationOptions | None = None,
) -> CalibrationResult:
    """Fit, judge and write a policy; raises :class:`CalibrationError` or ``LevelError``."""
    options = options or CalibrationOptions()
    known = [(c, [e for e in events if e.occurred_at <= as_of]) for c, events in histories]
    starts = [min(e.occurred_at for e in events) for _, events in known if events]
    if not starts:
        raise CalibrationError("the store holds no events before --as-of")
    cutoffs = plan_cutoffs(
        min(starts),
        as_of,
        horizon_days=options.horizon_days,
        step_days=options.step_days,
        count=options.max_cutoffs,
    )
    if len(cutoffs) < 2:  # one to train on, one held out
        raise CalibrationError(
            f"the history before {as_of:%Y-%m-%d} is too short for two cutoffs "
            f"{options.step_days} days apart with a {options.horizon_days}-day horizon; "
            "use a shorter --horizon-days or a later --as-of"
        )
    rows = snapshot_rows(known, base, [*cutoffs, as_of], timedelta(days=options.horizon_days))
    held = rows.at_cutoff(len(cutoffs) - 1)
    now = rows.at_cutoff(len(cutoffs))
    train = ~(held | now)
    _check_support(rows, train, held, options)
    terms = _terms(base)
    trial, l2 = _select(rows, train, held, terms, options.l2_grid)
    judged = _judge(trial, rows, held, base)
    labelled = ~now
    final = fit(rows.columns(labelled), rows.labels(labelled), terms, l2=l2, start=trial.weights)
    active = np.asarray(rows.active, dtype=bool)
    current = rows.columns(now & active if (now & active).any() else now)
    typical = {t.name: float(np.median(current[t.name])) for t in terms}
    model = anchored(final, typical)
    draft = load_policy(
        write_policy(base_text, model, typical, levels=None, report={}, version="draft")
    )
    levels = choose_levels(
        _exact_scores(draft, rows, now & active),
        _exact_scores(draft, rows, held & active),
        rows.labels(held & active),
        options.levels,
    )
    report = _report(
        rows,
        cutoffs=cutoffs,
        masks=(train, held, now),
        options=options,
        judged=judged,
        final=final,
        levels=levels,
        as_of=as_of,
        l2=l2,
    )
    version = options.version or _version(as_of, model)
    text = write_policy(base_text, model, typical, levels=levels, report=report, version=version)
    return CalibrationResult(text, load_policy(text), report)


def _check_support(
    rows: Snapshots, train: np.ndarray, held: np.ndarray, options: CalibrationOptions
) -> None:
    for name, mask in (("training", train), ("held-out", held)):
        count = int(mask.sum())
        churned = int(rows.labels(mask).sum())
        if count < options.min_rows or churned in {0, count}:
            raise CalibrationError(
                f"{count} customer snapshots ({churned} churned) at the {name} cutoffs: too "
                f"few, or only one outcome, to fit on (need {options.min_rows} with both)"
            )


def _select(
    rows: Snapshots, train: np.ndarray, held: np.ndarray, terms: list[Term], grid: Sequence[float]
) -> tuple[Fitted, float]:
    """Fit on the training cutoffs along the ridge path (strongest first, each warm-started
    from the last) and keep the strength whose model predicts the held-out cutoff best."""
    columns, labels = rows.columns(train), rows.labels(train)
    held_columns, held_labels = rows.columns(held), rows.labels(held)
    best: tuple[float, Fitted, float] | None = None
    previous: Sequence[float] = ()
    for l2 in sorted(grid, reverse=True):
        model = fit(columns, labels, terms, l2=l2, start=previous)
        previous = model.weights
        loss = log_loss(model, held_columns, held_labels)
        if best is None or loss < best[0]:
            best = (loss, model, l2)
    assert best is not None
    return best[1], best[2]


def _terms(policy: Policy) -> list[Term]:
    """The policy's curve knots (natural units) and each signal's required shape."""
    terms = []
    for spec in SIGNALS:
        curve = policy.churn.curves.get(spec.name)
        knots = curve.knots_natural if curve is not None else spec.knots
        terms.append(Term(spec.name, tuple(float(k) for k in knots), spec.direction))
    return terms


def _judge(model: Fitted, rows: Snapshots, held: np.ndarray, base: Policy) -> dict[str, Any]:
    columns = rows.columns(held)
    labels = rows.labels(held)
    probability = 1 / (1 + np.exp(-predict(model, columns)))
    base_scores = [score_steps(base, rows.inputs[i]) for i in np.nonzero(held)[0]]
    days = np.asarray(rows.days_since)[held]
    rfm = metrics.rfm_risk(days, columns["frequency"], columns["monetary"])
    return {
        "auc": metrics.roc_auc(probability, labels),
        "average_precision": metrics.average_precision(probability, labels),
        "brier": metrics.brier(probability, labels),
        "days_since_auc": metrics.roc_auc(days, labels),
        "rfm_auc": metrics.roc_auc(rfm, labels),
        "previous_policy_auc": metrics.roc_auc(base_scores, labels),
        "previous_policy_version": base.version,
        "reliability": [
            {
                "low": b.low,
                "high": b.high,
                "count": b.count,
                "predicted": b.predicted,
                "observed": b.observed,
            }
            for b in metrics.reliability(probability, labels)
        ],
    }


def _exact_scores(policy: Policy, rows: Snapshots, mask: np.ndarray) -> np.ndarray:
    """The integer scores the fold itself gives (not a float approximation)."""
    return np.array(
        [score_steps(policy, rows.inputs[i]) for i in np.nonzero(mask)[0]], dtype=np.int64
    )


def _report(
    rows: Snapshots,
    *,
    cutoffs: list[datetime],
    masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    options: CalibrationOptions,
    judged: dict[str, Any],
    final: Fitted,
    levels: dict[str, LevelFigures],
    as_of: datetime,
    l2: float,
) -> dict[str, Any]:
    labels = rows.labels()
    train, held, now = masks
    rule = options.levels
    return {
        "as_of": as_of.isoformat(),
        "horizon_days": options.horizon_days,
        "cutoffs": [c.isoformat() for c in cutoffs],
        "held_out_cutoff": cutoffs[-1].isoformat(),
        "customers": len(set(rows.customers)),
        "training_rows": int(train.sum()),
        "held_out_rows": int(held.sum()),
        "scored_now": int(now.sum()),
        "training_churn_rate": float(labels[train].mean()),
        "held_out_churn_rate": float(labels[held].mean()),
        "held_out": {k: v for k, v in judged.items() if k != "reliability"},
        "reliability": judged["reliability"],
        "fit": {
            "l2": l2,
            "l2_grid": list(options.l2_grid),
            "iterations": final.iterations,
            "converged": final.converged,
        },
        "levels_rule": {
            "watch_share": rule.watch,
            "warning_share": rule.warning,
            "critical_share": rule.critical,
            "target_precision": rule.target_precision,
            **({"fixed": [float(as_points(v)) for v in rule.fixed]} if rule.fixed else {}),
        },
        "levels": {
            name: {
                "score": float(as_points(f.score)),
                "share_of_active": f.share_active,
                "precision": f.precision,
                "recall": f.recall,
                "customers": f.customers,
            }
            for name, f in levels.items()
        },
    }


def _version(as_of: datetime, model: Fitted) -> str:
    digest = hashlib.sha256(repr(sorted(model.curves.items())).encode()).hexdigest()[:8]
    return f"calibrated-{as_of:%Y-%m-%d}-{digest}"
