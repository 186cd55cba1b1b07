"""The churn alert: raised, escalated, acknowledged, snoozed, resolved by ops or by
recovery, closed when the customer churns; one open alert at most, deterministic ids.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import sha256

from projections import churn as signals
from projections.changes import change, trigger_ids
from projections.model import (
    Change,
    InputEvent,
    Reason,
    from_micros,
    to_micros,
)
from projections.state import CustomerState
from projections.vocabulary import OPEN_ALERT_STATES, OPS_ACTIONS, AlertState


def alert_id_for(customer_id: str, sequence: int) -> str:
    """Deterministic: the n-th alert of a customer has the same id live and in replay."""
    digest = sha256(f"{customer_id}\x00alert\x00{sequence}".encode()).hexdigest()
    return f"alert-{digest[:24]}"


def ops_action(state: CustomerState, t: int, event: InputEvent, changes: list[Change]) -> None:
    """Ops actions apply to the open alert they name; anything else is ignored."""
    facts = event.facts
    if not state.alert_open or facts.get("alert_id") != state.alert_id:
        return
    action = OPS_ACTIONS[event.kind]
    by = str(facts.get("by", ""))
    reason = Reason(
        rule=f"alert.{action}",
        message=str(facts.get("reason", "")) or "ops action",
        policy_version=state.policy.version,
        inputs={"by": by},
        event_ids=(event.event_id,),
    )
    if action == "acknowledged":
        if state.alert_status != action:
            _set_alert(state, t, action, (reason,), changes)
    elif action == "snoozed":
        until = _instant(facts.get("until"))
        if until is None or until <= t:
            return
        state.snooze_until = until
        reason = Reason(
            reason.rule,
            reason.message,
            reason.policy_version,
            {"by": by, "until": from_micros(until)},
            event_ids=reason.event_ids,
        )
        _set_alert(state, t, action, (reason,), changes)
    else:
        state.alert_armed = False
        _set_alert(state, t, action, (reason,), changes)


def _instant(value: object) -> int | None:
    if isinstance(value, datetime):
        return to_micros(value) if value.utcoffset() is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return to_micros(parsed) if parsed.utcoffset() is not None else None
    return None


def evaluate_alert(
    state: CustomerState, t: int, trigger: InputEvent | None, changes: list[Change]
) -> None:
    """Move the alert as the score and stage at ``t`` require.

    Mirrored by :func:`alert_quiet` just below: a change to a condition here must be
    made there too (`tests/unit/test_projections_shortcuts.py` compares the two paths).
    """
    churn = state.policy.churn
    if state.stage == "churned":
        state.alert_armed = True
        if state.alert_open:
            reason = Reason(
                "alert.closed_churned",
                "the customer churned: the alert is closed, nothing left to prevent",
                state.policy.version,
                event_ids=state.stage_reasons[0].event_ids if state.stage_reasons else (),
            )
            _set_alert(state, t, "closed", (reason,), changes)
        return
    score = signals.score_at(state, t)
    if not state.alert_open:
        if not state.alert_armed:
            if score < churn.warning - churn.resolve_margin:
                state.alert_armed = True
            return
        if score >= churn.warning:
            state.alert_seq += 1
            state.alert_id = alert_id_for(state.customer_id, state.alert_seq)
            state.alert_severity = "critical" if score >= churn.critical else "warning"
            status: AlertState = "escalated" if state.alert_severity == "critical" else "raised"
            _set_alert(state, t, status, _score_reasons(state, t, score, "alert.raised", trigger),
                       changes, from_value="none")  # fmt: skip
        return
    if score < churn.warning - churn.resolve_margin:
        _set_alert(
            state, t, "auto_resolved",
            _score_reasons(state, t, score, "alert.auto_resolved", trigger), changes,
        )  # fmt: skip
    elif score >= churn.critical and state.alert_severity == "warning":
        state.alert_severity = "critical"
        _set_alert(
            state, t, "escalated",
            _score_reasons(state, t, score, "alert.escalated", trigger), changes,
        )  # fmt: skip
    elif (
        state.alert_status == "snoozed"
        and state.snooze_until is not None
        and t >= state.snooze_until
    ):
        status = "escalated" if state.alert_severity == "critical" else "raised"
        reason = Reason(
            "alert.snooze_ended",
            "the snooze ended and the alert is still open",
            state.policy.version,
            inputs={"until": from_micros(state.snooze_until)},
        )
        _set_alert(state, t, status, (reason,), changes)


def alert_quiet(state: CustomerState, t: int) -> bool:
    """True when :func:`evaluate_alert` at ``t`` would change nothing (no side effects).

    A hand-kept mirror of :func:`evaluate_alert`'s conditions, so the window-edge
    shortcut can skip the alert work without building reasons: the two must agree.
    """
    churn = state.policy.churn
    if state.stage == "churned":
        return state.alert_armed and not state.alert_open
    score = signals.score_at(state, t)
    if not state.alert_open:
        if not state.alert_armed:
            return score >= churn.warning - churn.resolve_margin
        return score < churn.warning
    if score < churn.warning - churn.resolve_margin:
        return False
    if score >= churn.critical and state.alert_severity == "warning":
        return False
    return not (
        state.alert_status == "snoozed"
        and state.snooze_until is not None
        and t >= state.snooze_until
    )


def _score_reasons(
    state: CustomerState, t: int, score: int, rule: str, trigger: InputEvent | None
) -> tuple[Reason, ...]:
    policy = state.policy
    level = signals.level_of(score, policy.churn)
    head = Reason(
        rule,
        f"churn score {signals.as_points(score)} ({level})",
        policy.version,
        inputs={"score": signals.as_points(score), "level": level},
        thresholds=signals.fixed_thresholds(policy)["alert"],
        event_ids=trigger_ids(trigger),
    )
    return (head, *signals.signal_reasons(state, t))


def _set_alert(
    state: CustomerState,
    t: int,
    status: AlertState,
    reasons: tuple[Reason, ...],
    changes: list[Change],
    *,
    from_value: AlertState | None = None,
) -> None:
    old = state.alert_status if from_value is None else from_value
    state.alert_status = status
    state.alert_open = status in OPEN_ALERT_STATES
    state.alert_since = t
    state.alert_reasons = reasons
    if status != "snoozed":
        state.snooze_until = None
    if state.emit:
        changes.append(change(state, "alert", old, status, t, reasons, alert_id=state.alert_id))


def cross_target(state: CustomerState) -> int | None:
    if state.stage != "churned" and state.last_commerce_us is not None and not state.subs:
        if not state.alert_open and state.alert_armed:
            return state.policy.churn.warning
        if state.alert_open and state.alert_severity == "warning":
            return state.policy.churn.critical
    return None
