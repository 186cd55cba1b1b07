"""The changes the projections publish: one `Change` per transition, with its event ids.

Shared by the tier, lifecycle and alert steps and by the late-event corrections, so every
change names its events the same way.
"""

from __future__ import annotations

from projections.model import Change, ChangeKind, InputEvent, Reason, from_micros
from projections.state import CustomerState


def trigger_ids(trigger: InputEvent | None, *more: str) -> tuple[str, ...]:
    """The triggering event first, then ``more`` (empty ones and repeats left out)."""
    ids = [] if trigger is None else [trigger.event_id]
    ids.extend(i for i in more if i and i not in ids)
    return tuple(ids)


def change(  # noqa: PLR0917
    state: CustomerState,
    kind: ChangeKind,
    old: str,
    new: str,
    at: int,
    reasons: tuple[Reason, ...],
    *,
    alert_id: str | None = None,
) -> Change:
    """A transition of ``state`` at ``at``; its event ids are those its reasons name."""
    ids = dict.fromkeys(i for reason in reasons for i in reason.event_ids if i)
    return Change(
        customer_id=state.customer_id,
        kind=kind,
        from_value=old,
        to_value=new,
        effective_at=from_micros(at),
        reasons=reasons,
        policy_version=state.policy.version,
        event_ids=tuple(ids),
        alert_id=alert_id,
    )
