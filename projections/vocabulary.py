"""The projections' vocabularies: one spelling for each tier, stage, churn level, alert
state and ops action kind.

`Literal` types, not enums: the values are the strings that JSON outputs, read-model
rows, Kafka messages and the CLI carry, stage names are dictionary keys orjson writes
(it refuses `str`-subclass keys), and the fold compares them on every event (a literal
comparison costs a quarter of an enum attribute lookup). mypy (strict equality) checks
every spelling against these definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

from domain.alerts import ALERT_ACTIONS, AlertAction

Tier = Literal["platinum", "gold", "silver", "bronze", "none"]
"""Value tiers, highest first; ``none`` is no tier. A policy names its levels from
these (`projections.policy` refuses any other name)."""
TIERS: Final[tuple[Tier, ...]] = get_args(Tier)
NO_TIER: Final[Tier] = "none"

Stage = Literal["prospect", "new", "active", "loyal", "at_risk", "churned", "reactivated"]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)

ChurnLevel = Literal["none", "watch", "warning", "critical"]
LEVELS: Final[tuple[ChurnLevel, ...]] = get_args(ChurnLevel)
Severity = Literal["warning", "critical"]
"""The churn levels an open alert can have."""

AlertState = Literal["none", "raised", "escalated", "auto_resolved", "closed", AlertAction]
"""The alert's states; an ops action (`domain.alerts.AlertAction`) moves an open alert
to the state of the same name."""
OPEN_ALERT_STATES: Final[frozenset[AlertState]] = frozenset(
    {"raised", "escalated", "acknowledged", "snoozed"}
)


def ops_kind(action: AlertAction) -> str:
    """The input event kind of a recorded ops action (``alert_acknowledged``, ...): the
    spelling on the `customer-events` topic and in replays."""
    return f"alert_{action}"


OPS_ACTIONS: Final[Mapping[str, AlertAction]] = {ops_kind(a): a for a in ALERT_ACTIONS}
"""Input event kind -> ops action: the inverse of :func:`ops_kind`."""
