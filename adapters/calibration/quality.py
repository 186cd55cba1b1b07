"""Judging a churn ranking on a population whose future is known.

A population is split in time: what happened up to ``end - horizon`` is the history a
store would hold (calibration sees only that), what happened in the horizon after it is
the truth. Each ranking (the calibrated score, the policy it replaces, days since the
last purchase, RFM quintiles) is scored by ROC-AUC against "no purchase or renewal
within the horizon", over every customer who had bought by then. `make quality` prints
these figures for every population, and a unit test asserts them on a small one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from adapters.calibration import CalibrationOptions, calibrate, metrics
from adapters.calibration.dataset import snapshot_rows
from projections import InputEvent, Policy, score_steps


@dataclass(frozen=True, slots=True)
class Judgement:
    customers: int
    churn_rate: float
    calibrated_auc: float
    previous_auc: float
    days_since_auc: float
    rfm_auc: float
    calibrated_ap: float
    days_since_ap: float
    held_out_auc: float
    """The calibration's own held-out figure (an earlier cutoff, from the store alone)."""

    @property
    def margin(self) -> float:
        """How far the calibrated score is ahead of the better baseline."""
        return self.calibrated_auc - max(self.days_since_auc, self.rfm_auc)


def judge(
    histories: Sequence[tuple[str, Sequence[InputEvent]]],
    base: Policy,
    base_text: str,
    *,
    end: datetime,
    options: CalibrationOptions | None = None,
) -> Judgement:
    options = options or CalibrationOptions()
    horizon = timedelta(days=options.horizon_days)
    cutoff = end - horizon
    known = [(c, [e for e in events if e.occurred_at <= cutoff]) for c, events in histories]
    result = calibrate(known, base, base_text, as_of=cutoff, options=options)
    rows = snapshot_rows(histories, base, [cutoff], horizon)
    labels = rows.labels()
    columns = rows.columns()
    calibrated = [score_steps(result.policy, inputs) for inputs in rows.inputs]
    previous = [score_steps(base, inputs) for inputs in rows.inputs]
    days = np.asarray(rows.days_since)
    rfm = metrics.rfm_risk(days, columns["frequency"], columns["monetary"])
    return Judgement(
        customers=len(rows),
        churn_rate=float(labels.mean()),
        calibrated_auc=metrics.roc_auc(calibrated, labels),
        previous_auc=metrics.roc_auc(previous, labels),
        days_since_auc=metrics.roc_auc(days, labels),
        rfm_auc=metrics.roc_auc(rfm, labels),
        calibrated_ap=metrics.average_precision(calibrated, labels),
        days_since_ap=metrics.average_precision(days, labels),
        held_out_auc=float(result.report["held_out"]["auc"]),
    )
