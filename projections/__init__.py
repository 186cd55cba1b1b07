"""Pure, deterministic folds of a customer's events into tier, lifecycle and churn state.

No I/O, no clock, no environment: time is always an argument, so a live projection and
a replay of the stored events evaluated at the same instant are equal by construction.
"""

from projections.alert import alert_id_for
from projections.driver import (
    advance,
    apply,
    fold,
    initial_state,
    next_deadline,
    replay,
    snapshot,
)
from projections.model import (
    ALERT_ACKNOWLEDGED,
    ALERT_RESOLVED,
    ALERT_SNOOZED,
    Change,
    InputEvent,
    Reason,
    ReplayStep,
    Snapshot,
    StepSummary,
)
from projections.policy import (
    DEFAULT_POLICY_RESOURCE,
    Policy,
    PolicyError,
    load_policy,
)
from projections.state import FAR, CustomerState
from projections.vocabulary import STAGES

__all__ = [
    "ALERT_ACKNOWLEDGED",
    "ALERT_RESOLVED",
    "ALERT_SNOOZED",
    "DEFAULT_POLICY_RESOURCE",
    "FAR",
    "STAGES",
    "Change",
    "CustomerState",
    "InputEvent",
    "Policy",
    "PolicyError",
    "Reason",
    "ReplayStep",
    "Snapshot",
    "StepSummary",
    "advance",
    "alert_id_for",
    "apply",
    "fold",
    "initial_state",
    "load_policy",
    "next_deadline",
    "replay",
    "snapshot",
]
