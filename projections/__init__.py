"""Pure, deterministic folds of a customer's events into tier, lifecycle and churn state.

No I/O, no clock, no environment: time is always an argument, so a live projection and
a replay of the stored events evaluated at the same instant are equal by construction.
"""

from projections.alert import alert_id_for
from projections.churn import as_points, churn_score, score_steps
from projections.driver import (
    advance,
    apply,
    churn_inputs,
    fold,
    fold_through,
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
from projections.signals import SIGNALS, UNIT_SCALE, ChurnInputs, SignalSpec
from projections.state import FAR, CustomerState
from projections.vocabulary import STAGES

__all__ = [
    "ALERT_ACKNOWLEDGED",
    "ALERT_RESOLVED",
    "ALERT_SNOOZED",
    "DEFAULT_POLICY_RESOURCE",
    "FAR",
    "SIGNALS",
    "STAGES",
    "UNIT_SCALE",
    "Change",
    "ChurnInputs",
    "CustomerState",
    "InputEvent",
    "Policy",
    "PolicyError",
    "Reason",
    "ReplayStep",
    "SignalSpec",
    "Snapshot",
    "StepSummary",
    "advance",
    "alert_id_for",
    "apply",
    "as_points",
    "churn_inputs",
    "churn_score",
    "fold",
    "fold_through",
    "initial_state",
    "load_policy",
    "next_deadline",
    "replay",
    "score_steps",
    "snapshot",
]
