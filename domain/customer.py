"""The Customer aggregate: the one consistency boundary every interaction is appended to."""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.alerts import ALERT_ACTIONS, AlertAction, IdentityAction
from domain.interactions import Interaction

CUSTOMER_NAMESPACE = UUID("6f0e5b8e-52a4-4d2c-9a51-4d0c1b8a7e21")
"""Fixed forever: customer aggregate ids are derived from it, so changing it orphans history."""


@lru_cache(maxsize=1 << 18)
def customer_uuid(customer_id: str) -> UUID:
    """Map an upstream customer key to its aggregate id, the same on every machine and path."""
    return uuid5(CUSTOMER_NAMESPACE, customer_id)


class Customer(Aggregate):
    """A customer's immutable interaction history.

    The aggregate keeps only what its decisions need; the projections fold the history
    into tier, lifecycle and churn state elsewhere, so this class stays small and its
    events stay facts (what upstream said happened), never conclusions.
    """

    class Created(Aggregate.Created):
        """The customer's history begins (first interaction seen)."""

        customer_id: str

    class InteractionRecorded(Aggregate.Event):
        """One upstream interaction, as validated; `personal` is encrypted at rest."""

        source: str
        event_id: str
        kind: str
        occurred_at: datetime
        amount: Decimal | None
        currency: str | None
        facts: dict[str, Any]
        personal: dict[str, Any] | None
        digest: str

    class AlertActionRecorded(Aggregate.Event):
        """An ops decision on a churn alert: acknowledged, snoozed (until) or resolved."""

        action: str
        alert_id: str
        by: str
        reason: str
        until: datetime | None
        occurred_at: datetime

    class Forgotten(Aggregate.Event):
        """The customer's personal data was erased (their data key shredded): who, why.

        The history before it stays, with its personal parts unreadable for good."""

        by: str
        reason: str
        occurred_at: datetime

    class IdentityLinkRecorded(Aggregate.Event):
        """Ops said two customer ids are one person (``merged``) or undid it
        (``unmerged``); recorded on both customers' histories (docs/identity.md)."""

        action: str
        survivor: str
        merged: str
        by: str
        reason: str
        occurred_at: datetime

    @staticmethod
    def create_id(customer_id: str) -> UUID:
        return customer_uuid(customer_id)

    def __deepcopy__(self, memo: dict[int, Any]) -> Customer:
        """An independent copy, as `copy.deepcopy` promises, without its generic walk
        (~40 µs a customer; the store copies every cached customer it writes to): every
        attribute is immutable (ids, counts, instants, strings, a frozenset) except the
        pending events, which are copied."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__["_pending_events"] = copy.deepcopy(self.__dict__["_pending_events"], memo)
        return clone

    @event(Created)
    def __init__(self, customer_id: str, *, timestamp: datetime) -> None:
        """``timestamp``: when the history is recorded (eventsourcing's own field, given
        by the writer's clock, never read here: time is an argument)."""
        self.customer_id = customer_id
        self.interaction_count = 0
        self.last_occurred_at: datetime | None = None
        self.merged_into: str | None = None
        """The survivor this customer is merged into now, if any."""
        self.absorbed: frozenset[str] = frozenset()
        """The customers merged into this one now."""

    def record(self, interaction: Interaction, *, digest: str, at: datetime) -> None:
        """Append one validated interaction, recorded at ``at``; `digest` identifies its
        payload for dedupe."""
        if interaction.customer_id != self.customer_id:
            raise WrongCustomerError(interaction.customer_id, self.customer_id)
        self._interaction_recorded(**interaction_fields(interaction, digest), timestamp=at)

    def act_on_alert(
        self,
        *,
        action: AlertAction,
        alert_id: str,
        by: str,
        reason: str,
        until: datetime | None,
        at: datetime,
    ) -> None:
        """Record what ops did about an alert; the projections fold it like any event."""
        check_alert_action(
            action=action, alert_id=alert_id, by=by, reason=reason, until=until, at=at
        )
        self._alert_action_recorded(
            action=action,
            alert_id=alert_id,
            by=by,
            reason=reason,
            until=until,
            occurred_at=at,
            timestamp=at,
        )

    def forget(self, *, by: str, reason: str, at: datetime) -> None:
        """Record the erasure of the customer's personal data (the key is shredded apart)."""
        check_erasure(by=by, reason=reason, at=at)
        self._forgotten(by=by, reason=reason, occurred_at=at, timestamp=at)

    @event(Forgotten)
    def _forgotten(
        self, *, by: str, reason: str, occurred_at: datetime, timestamp: datetime
    ) -> None:
        pass

    def link_identity(
        self,
        *,
        action: IdentityAction,
        survivor: str,
        merged: str,
        by: str,
        reason: str,
        at: datetime,
    ) -> None:
        """Record one side of a merge or unmerge; the caller records the other side in
        the same transaction, after `check_identity_link` passed on both."""
        if self.customer_id not in (survivor, merged):
            raise WrongCustomerError(survivor, self.customer_id)
        self._identity_link_recorded(
            action=action,
            survivor=survivor,
            merged=merged,
            by=by,
            reason=reason,
            occurred_at=at,
            timestamp=at,
        )

    @event(IdentityLinkRecorded)
    def _identity_link_recorded(
        self,
        *,
        action: str,
        survivor: str,
        merged: str,
        by: str,
        reason: str,
        occurred_at: datetime,
        timestamp: datetime,
    ) -> None:
        if self.customer_id == merged:
            self.merged_into = survivor if action == "merged" else None
        elif action == "merged":
            self.absorbed = self.absorbed | {merged}
        else:
            self.absorbed = self.absorbed - {merged}

    @event(AlertActionRecorded)
    def _alert_action_recorded(
        self,
        *,
        action: str,
        alert_id: str,
        by: str,
        reason: str,
        until: datetime | None,
        occurred_at: datetime,
        timestamp: datetime,
    ) -> None:
        pass

    @event(InteractionRecorded)
    def _interaction_recorded(
        self,
        *,
        source: str,
        event_id: str,
        kind: str,
        occurred_at: datetime,
        amount: Decimal | None,
        currency: str | None,
        facts: dict[str, Any],
        personal: dict[str, Any] | None,
        digest: str,
        timestamp: datetime,
    ) -> None:
        self.interaction_count += 1
        if self.last_occurred_at is None or occurred_at > self.last_occurred_at:
            self.last_occurred_at = occurred_at


def interaction_fields(interaction: Interaction, digest: str) -> dict[str, Any]:
    """The fields of an `InteractionRecorded` event: its stored state, minus the timestamp.

    The bulk-import fast path builds stored events from this same function, so both
    write paths store the same state for the same interaction.
    """
    money = interaction.money
    return {
        "source": interaction.source,
        "event_id": interaction.event_id,
        "kind": interaction.kind.value,
        "occurred_at": interaction.occurred_at,
        "amount": None if money is None else money.amount,
        "currency": None if money is None else money.currency,
        "facts": dict(interaction.facts),
        "personal": None if interaction.personal is None else dict(interaction.personal),
        "digest": digest,
    }


class InvalidAlertActionError(ValueError):
    """An ops action on an alert that cannot be recorded as given."""


def check_alert_action(
    *, action: str, alert_id: str, by: str, reason: str, until: datetime | None, at: datetime
) -> None:
    """Refuse an ops action that would put nonsense into the permanent record."""
    if action not in ALERT_ACTIONS:
        raise InvalidAlertActionError(f"action must be one of {sorted(ALERT_ACTIONS)}")
    if not alert_id.strip() or len(alert_id) > 128:
        raise InvalidAlertActionError("alert_id must be 1-128 characters")
    if not by.strip() or len(by) > 128:
        raise InvalidAlertActionError("by (who acted) must be 1-128 characters")
    if len(reason) > 1000:
        raise InvalidAlertActionError("reason must be at most 1000 characters")
    if at.utcoffset() is None or (until is not None and until.utcoffset() is None):
        raise InvalidAlertActionError("times must carry a UTC offset")
    if action == "snoozed" and (until is None or until <= at):
        raise InvalidAlertActionError("a snooze needs an `until` later than now")
    if action != "snoozed" and until is not None:
        raise InvalidAlertActionError("only a snooze takes `until`")


class InvalidErasureError(ValueError):
    """An erasure request that cannot be recorded as given."""


def check_erasure(*, by: str, reason: str, at: datetime) -> None:
    """Who erased and why are the receipt: both are required."""
    if not by.strip() or len(by) > 128:
        raise InvalidErasureError("--by (who erases) must be 1-128 characters")
    if not reason.strip() or len(reason) > 1000:
        raise InvalidErasureError("--reason (why) must be 1-1000 characters")
    if at.utcoffset() is None:
        raise InvalidErasureError("times must carry a UTC offset")


class InvalidIdentityLinkError(ValueError):
    """A merge or unmerge that cannot be recorded; ``code`` is documented in docs/errors.md."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_identity_link(
    action: IdentityAction,
    survivor: Customer | None,
    merged: Customer | None,
    *,
    survivor_id: str,
    merged_id: str,
    by: str,
    reason: str,
) -> None:
    """Refuse a merge or unmerge that would leave the identity links ambiguous.

    Merges are not transitive: a merged customer cannot absorb others, nor be merged
    again, and a survivor cannot itself be merged while it holds others (no chains), so
    every customer resolves to its survivor in one step (docs/identity.md).
    """
    if not by.strip() or len(by) > 128:
        raise InvalidIdentityLinkError("invalid_by", "--by (who acted) must be 1-128 characters")
    if not reason.strip() or len(reason) > 1000:
        raise InvalidIdentityLinkError(
            "invalid_reason", "--reason must be 1-1000 characters (it is the audit trail)"
        )
    if survivor_id == merged_id:
        raise InvalidIdentityLinkError(
            "merge_into_itself", f"cannot {action.removesuffix('d')} {survivor_id!r} with itself"
        )
    for customer, name in ((survivor, survivor_id), (merged, merged_id)):
        if customer is None:
            raise InvalidIdentityLinkError("unknown_customer", f"no history for customer {name!r}")
    assert survivor is not None
    assert merged is not None
    if action == "unmerged":
        if merged.merged_into != survivor_id:
            raise InvalidIdentityLinkError(
                "not_merged", f"{merged_id!r} is not merged into {survivor_id!r}"
            )
        return
    if merged.merged_into is not None:
        raise InvalidIdentityLinkError(
            "already_merged", f"{merged_id!r} is already merged into {merged.merged_into!r}"
        )
    if survivor.merged_into is not None:
        raise InvalidIdentityLinkError(
            "merge_chain",
            f"{survivor_id!r} is itself merged into {survivor.merged_into!r}; "
            f"merge into {survivor.merged_into!r} instead",
        )
    if merged.absorbed:
        raise InvalidIdentityLinkError(
            "merge_chain",
            f"{merged_id!r} holds merged customers ({', '.join(sorted(merged.absorbed))}); "
            "unmerge them first, or merge the other way round",
        )


class WrongCustomerError(ValueError):
    """An interaction was routed to another customer's aggregate: a wiring bug, never input."""

    def __init__(self, given: str, expected: str) -> None:
        super().__init__(f"interaction for customer {given!r} routed to {expected!r}")
