"""What ops can do about a churn alert: one spelling per action.

The Customer aggregate records them (``AlertActionRecorded.action``); the projections
fold each as an input event of kind ``alert_<action>`` (the one mapping:
`projections.vocabulary.ops_kind`), and the alert moves to the state of the same name.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

AlertAction = Literal["acknowledged", "snoozed", "resolved"]
ALERT_ACTIONS: Final[tuple[AlertAction, ...]] = get_args(AlertAction)

IdentityAction = Literal["merged", "unmerged"]
"""What ops can do about two ids of one person (docs/identity.md); the projections fold
each as an input event of kind ``identity_<action>``."""
IDENTITY_ACTIONS: Final[tuple[IdentityAction, ...]] = get_args(IdentityAction)
