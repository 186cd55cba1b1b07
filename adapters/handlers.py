"""Command handlers shared by the CLI and the HTTP API, so the two cannot drift.

Each takes the wired services it needs (handed in by infra's composition root) and
raises the project's own errors; every entry point only translates them to its medium
(an exit code and a line on stderr, or a status code and a JSON error body).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.readside import ProjectionReader
from adapters.store import CustomerStore, Item, Outcome
from domain.alerts import AlertAction
from domain.errors import UsageError


class NoOpenAlertError(UsageError):
    """The customer has no open alert (or not the one named): nothing to act on."""

    code = "no_open_alert"


@dataclass(frozen=True, slots=True)
class AlertActed:
    """What an ops action did: the alert, its state before and after, the new version."""

    customer_id: str
    alert_id: str
    action: AlertAction
    by: str
    at: datetime
    state_before: str
    state_after: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "alert_id": self.alert_id,
            "action": self.action,
            "by": self.by,
            "at": self.at.isoformat(),
            "state_before": self.state_before,
            "alert_state": self.state_after,
            "version": self.version,
        }


def act_on_alert(
    store: CustomerStore,
    reader: ProjectionReader,
    clock: Callable[[], datetime],
    customer_id: str,
    *,
    action: AlertAction,
    by: str,
    reason: str,
    until: datetime | None = None,
    alert_id: str | None = None,
) -> AlertActed:
    """Record an ops action on the customer's open alert (the one named, if
    ``alert_id`` is given), as an event folded like any other.

    Raises `CustomerNotFoundError`, `NoOpenAlertError` or `InvalidAlertActionError`.
    """
    view = reader.customer(customer_id, as_of=clock())
    if not view.alert_open or view.alert_id is None:
        merged = f" (merged into {view.merged_into}: act on it)" if view.merged_into else ""
        raise NoOpenAlertError(
            f"{customer_id} has no open alert{merged}", hint="list open alerts with `alerts list`"
        )
    if alert_id is not None and view.alert_id != alert_id:
        raise NoOpenAlertError(
            f"alert {alert_id} is no longer open (the open alert of {customer_id} is "
            f"{view.alert_id})",
            hint="reload the alert queue",
        )
    version = store.record_alert_action(
        customer_id, action=action, alert_id=view.alert_id, by=by, reason=reason, until=until
    )
    at = clock()
    after = reader.customer(customer_id, as_of=at)
    return AlertActed(
        customer_id=customer_id,
        alert_id=view.alert_id,
        action=action,
        by=by,
        at=at,
        state_before=view.alert_state,
        state_after=after.alert_state,
        version=version,
    )


def record_interactions(
    store: CustomerStore,
    payloads: Sequence[bytes | Mapping[str, Any]],
    *,
    provenance: Mapping[str, Any],
) -> list[Outcome]:
    """Record interactions given outside Kafka (HTTP) through the ingest's own path:
    one transaction, idempotent by ``(source, event_id)``, rejections dead-lettered
    with ``provenance`` (and so published to the DLQ topic by the relay)."""
    return store.record([Item(payload, provenance) for payload in payloads])
