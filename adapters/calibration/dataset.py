"""Self-supervised training data: every customer at several past cutoffs, labelled by what
happened next.

At each cutoff a customer with a purchase or subscription so far is one row: the churn
signals exactly as the fold sees them at that instant (the same function the live score
evaluates, so training and serving cannot drift apart), and a label that says whether
they bought or renewed within the horizon after it. Only events up to the label's end are
ever looked at, so a model fitted on these rows never sees its own future.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import numpy as np
from numpy.typing import NDArray

from projections import (
    SIGNALS,
    UNIT_SCALE,
    ChurnInputs,
    InputEvent,
    Policy,
    churn_inputs,
    fold_through,
)

DAY_SECONDS: Final = 86_400.0
COMMERCE_KINDS: Final = frozenset({"purchase", "subscription_started", "subscription_renewed"})
ENGAGED_OR_AT_RISK: Final = frozenset({"new", "active", "loyal", "reactivated", "at_risk"})


@dataclass
class Snapshots:
    """Rows of (customer, cutoff): signals in natural units, label, and what baselines use."""

    cutoffs: list[datetime]
    cutoff: list[int] = field(default_factory=list)
    """Index into ``cutoffs`` of each row."""
    customers: list[str] = field(default_factory=list)
    inputs: list[ChurnInputs] = field(default_factory=list)
    churned: list[bool] = field(default_factory=list)
    """No purchase or renewal within the horizon after the cutoff."""
    active: list[bool] = field(default_factory=list)
    """Engaged or at risk at the cutoff (the customers an alert can be raised for)."""
    days_since: list[float] = field(default_factory=list)
    """Days since the last purchase or renewal (the days-since baseline; never zeroed)."""

    def __len__(self) -> int:
        return len(self.customers)

    def columns(self, mask: NDArray[np.bool_] | None = None) -> dict[str, NDArray[np.float64]]:
        """Each signal's values in natural units (days, base currency, counts...)."""
        raw = np.array([tuple(i) for i in self.inputs], dtype=float).reshape(
            len(self), len(SIGNALS)
        )
        if mask is not None:
            raw = raw[mask]
        return {spec.name: raw[:, n] / UNIT_SCALE[spec.unit] for n, spec in enumerate(SIGNALS)}

    def labels(self, mask: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
        y: NDArray[np.bool_] = np.asarray(self.churned, dtype=bool)
        return y if mask is None else y[mask]

    def at_cutoff(self, index: int) -> NDArray[np.bool_]:
        found: NDArray[np.bool_] = np.asarray(self.cutoff) == index
        return found


def commerce_instants(events: Sequence[InputEvent]) -> list[datetime]:
    """When the customer bought or renewed: what "did not churn" means."""
    return sorted(e.occurred_at for e in events if e.kind in COMMERCE_KINDS)


def snapshot_rows(
    histories: Iterable[tuple[str, Sequence[InputEvent]]],
    policy: Policy,
    cutoffs: Sequence[datetime],
    horizon: timedelta,
) -> Snapshots:
    """Fold each customer once through the cutoffs (in time order) and label each row.

    A row whose horizon ends after the last event looked at (the customer's future is
    unknown there, e.g. the present) is labelled "churned": use such rows for their
    signals only (``labelled`` says which rows have a real label).
    """
    ordered = sorted(cutoffs)
    rows = Snapshots(list(ordered))
    for customer_id, events in histories:
        if not events:
            continue
        commerce = commerce_instants(events)
        if not commerce or commerce[0] > ordered[-1]:
            continue
        position = 0
        stops = fold_through(
            customer_id, [e for e in events if e.occurred_at <= ordered[-1]], policy, ordered
        )
        for index, (at, state) in enumerate(stops):
            inputs = churn_inputs(state, at)
            if inputs is None:
                continue
            while position < len(commerce) and commerce[position] <= at:
                position += 1
            rows.cutoff.append(index)
            rows.customers.append(customer_id)
            rows.inputs.append(inputs)
            rows.churned.append(
                not (position < len(commerce) and commerce[position] <= at + horizon)
            )
            rows.active.append(state.stage in ENGAGED_OR_AT_RISK)
            rows.days_since.append((at - commerce[position - 1]).total_seconds() / DAY_SECONDS)
    return rows
