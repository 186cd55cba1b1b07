"""The `customer-events` message: what the relay publishes and the projector folds.

One definition for both ends: `adapters.relay` encodes with :func:`encode_customer_event`
and `streams.projector` decodes with :func:`decode_customer_event`. The functions work on
JSON values (the edges turn them into bytes with orjson, which the core may not import):
``{"position", "customer_id", "version", "type", "event"}`` with ``event =
InputEvent.to_dict()``, or None for a customer's Created event.

Decoding is strict because the only producer is our own relay: a message that does not
have this shape is a bug or a foreign writer on the topic, and folding a guess would
silently make the read models disagree with a replay of the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from projections.model import InputEvent


class WireError(ValueError):
    """A `customer-events` message that is not what the relay publishes."""


class CustomerEvent(NamedTuple):
    """One relayed event: whose, which version, where in the store's log, and what."""

    customer_id: str
    version: int
    position: int
    event: InputEvent | None
    """None for events the projections ignore (the Created event, version 1)."""


def encode_customer_event(
    *, position: int, customer_id: str, version: int, stored_type: str, event: InputEvent | None
) -> dict[str, Any]:
    """The JSON object of one message; ``stored_type`` names the stored event's class
    (``Created``, ``InteractionRecorded``, ``AlertActionRecorded``), for readers only."""
    return {
        "position": position,
        "customer_id": customer_id,
        "version": version,
        "type": stored_type,
        "event": None if event is None else event.to_dict(),
    }


def decode_customer_event(data: object) -> CustomerEvent:
    """Decode one message's JSON value; raise `WireError` naming what is wrong."""
    if not isinstance(data, dict):
        raise WireError("message must be a JSON object")
    customer_id = _text(data, "customer_id")
    version = _positive_int(data, "version")
    position = _positive_int(data, "position")
    raw_event = data.get("event")
    if raw_event is None:
        return CustomerEvent(customer_id, version, position, None)
    if not isinstance(raw_event, dict):
        raise WireError("event must be an object or null")
    return CustomerEvent(customer_id, version, position, _input_event(raw_event, version))


def _input_event(data: Mapping[str, Any], version: int) -> InputEvent:
    event_version = data.get("version")
    if event_version != version:
        raise WireError(f"event.version {event_version!r} differs from version {version}")
    amount = data.get("amount")
    currency = data.get("currency")
    facts = data.get("facts")
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise WireError("event.facts must be an object")
    if currency is not None and not isinstance(currency, str):
        raise WireError("event.currency must be a string or null")
    return InputEvent(
        event_id=_text(data, "event_id", where="event."),
        version=version,
        kind=_text(data, "kind", where="event."),
        occurred_at=_instant(data.get("occurred_at")),
        amount=None if amount is None else _decimal(amount),
        currency=currency,
        # Kept as sent: an ops action's `until` stays an ISO string, which the
        # projections accept as readily as a datetime.
        facts=facts,
    )


def _text(data: Mapping[str, Any], name: str, *, where: str = "") -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise WireError(f"{where}{name} must be a non-empty string")
    return value


def _positive_int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if type(value) is not int or value < 1:
        raise WireError(f"{name} must be a positive integer")
    return value


def _instant(value: object) -> datetime:
    if not isinstance(value, str):
        raise WireError("event.occurred_at must be an ISO 8601 string")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(f"event.occurred_at is not ISO 8601: {value!r}") from None
    if instant.utcoffset() is None:
        raise WireError(f"event.occurred_at has no UTC offset: {value!r}")
    return instant


def _decimal(value: object) -> Decimal:
    # A string only: a JSON number would already have passed through a float.
    if not isinstance(value, str):
        raise WireError("event.amount must be a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise WireError(f"event.amount is not a decimal: {value!r}") from None
    if not amount.is_finite():
        raise WireError(f"event.amount is not finite: {value!r}")
    return amount
