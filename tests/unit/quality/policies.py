"""A policy with round, hand-checkable churn curves, for tests of the alert state machine.

The default policy's curves are fitted (and refitted when the default is remade); tests
of hysteresis, escalation and ops actions should not depend on them. Here the log-odds
are an intercept of -3 plus a recency curve and a few experience signals with whole
values, so each test can say why a score is what it is.
"""

from __future__ import annotations

import math
from typing import Any

import tomlkit

from infra.bootstrap import default_policy_text
from projections import Policy, load_policy

CURVES: dict[str, tuple[list[Any], list[str]]] = {
    # 180 days without a purchase is even odds; a year is 95 %
    "recency": ([0, 30, 60, 90, 180, 365], ["0", "0", "1", "2", "3", "6"]),
    "complaints": ([0, 1, 2, 4], ["0", "1", "2", "2"]),
    "tickets_past_sla": ([0, 1, 2, 4], ["0", "1", "1", "1"]),
    "nps_detractor": ([0, 1], ["0", "1"]),
}


def simple_policy_text(
    *,
    resolve_margin: int = 10,
    curves: dict[str, tuple[list[Any], list[str]]] | None = None,
    **levels: int,
) -> str:
    doc = tomlkit.parse(default_policy_text())
    doc["version"] = "test-simple"
    churn: Any = doc["churn"]
    churn["intercept"] = "-3"
    for name, table in churn["signals"].items():
        known = {**CURVES, **(curves or {})}
        at, logit = known.get(name, (list(table["at"]), ["0"] * len(table["at"])))
        table["at"] = tomlkit.item(at)
        table["logit"] = tomlkit.item(logit)
        table["typical"] = "0"
    for name, value in {"watch": 30, "warning": 50, "critical": 70, **levels}.items():
        churn["levels"][name] = value
    doc["alert"]["resolve_margin"] = resolve_margin  # type: ignore[index]
    return tomlkit.dumps(doc)


def simple_policy(*, resolve_margin: int = 10, **levels: int) -> Policy:
    return load_policy(simple_policy_text(resolve_margin=resolve_margin, **levels))


def percent(logit: float) -> float:
    """The score (percent, one decimal) of a log-odds, as the fold rounds it."""
    return round(100 / (1 + math.exp(-logit)), 1)


ALERTING: dict[str, tuple[list[Any], list[str]]] = {
    "recency": ([0, 30, 60, 90, 180, 365], ["0", "1", "3", "4", "5", "6"]),
}
"""For pipeline tests: a customer silent for a month is at watch, for two at warning."""
