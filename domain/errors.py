"""Rejections and the stable code catalogue shared by every entry point.

The same ``code`` strings travel over the Kafka dead-letter topic, HTTP 4xx bodies
and the CLI, so upstream teams can act on them mechanically. Codes are part of the
wire contract: add new ones freely, never rename or reuse one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Every rejection code the system can emit; the value is the wire string.

    ====================== ==========================================================
    code                   meaning
    ====================== ==========================================================
    *wire level (adapters that decode bytes)*
    malformed_json         the payload is not valid JSON
    invalid_utf8           the payload is not valid UTF-8
    oversize               the payload exceeds the size limit (64 KiB)
    not_an_object          the payload is JSON but not an object
    too_deep               nesting too deep (whole payload, or ``attributes`` > 5)
    *field level (domain validation)*
    missing_field          a required field is absent
    unknown_field          a field the contract does not define for this kind
    wrong_type             wrong JSON type (no coercion: "5" is not 5, true is not 1)
    empty                  empty or whitespace-only string, or empty ``profile``
    too_long               string longer than the field allows
    invalid_characters     NUL or other control characters where they are not allowed
    invalid_choice         value outside the field's closed set (e.g. ``priority``)
    unknown_kind           ``kind`` is not in the catalogue
    invalid_timestamp      ``occurred_at`` is not an RFC 3339 timestamp
    missing_offset         ``occurred_at`` has no UTC offset
    in_future              ``occurred_at`` is later than now plus the allowed skew
    out_of_range           ``occurred_at`` before 1970 or beyond what can be stored
    invalid_amount         ``amount`` is not a non-negative exact decimal string
                           fitting the currency's minor units
    invalid_currency       ``currency`` is not an active ISO 4217 code (upper case)
    invalid_score          ``score`` is not within 0..10
    invalid_email          ``profile.email`` is not ``local@domain.tld``
    invalid_phone          ``profile.phone`` is not E.164 (``+`` and 7-15 digits)
    invalid_country        ``profile.country`` is not an ISO 3166-1 alpha-2 code
    invalid_language       ``profile.language`` is not a BCP 47 tag like ``pt-BR``
    invalid_timezone       ``profile.timezone`` is not an IANA zone name
    attributes_too_large   ``attributes`` over 8 KiB serialized, or a key over 64
    invalid_value          catch-all for a rule with no dedicated code (should not
                           appear with the current contract; report it if it does)
    *store level*
    conflicting_duplicate  same ``(source, event_id)`` already stored with other content
    customer_forgotten     the customer was erased (crypto-shredded); nothing new is stored
    ====================== ==========================================================
    """

    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    OVERSIZE = "oversize"
    NOT_AN_OBJECT = "not_an_object"
    TOO_DEEP = "too_deep"

    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    INVALID_CHARACTERS = "invalid_characters"
    INVALID_CHOICE = "invalid_choice"
    UNKNOWN_KIND = "unknown_kind"
    INVALID_TIMESTAMP = "invalid_timestamp"
    MISSING_OFFSET = "missing_offset"
    IN_FUTURE = "in_future"
    OUT_OF_RANGE = "out_of_range"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_SCORE = "invalid_score"
    INVALID_EMAIL = "invalid_email"
    INVALID_PHONE = "invalid_phone"
    INVALID_COUNTRY = "invalid_country"
    INVALID_LANGUAGE = "invalid_language"
    INVALID_TIMEZONE = "invalid_timezone"
    ATTRIBUTES_TOO_LARGE = "attributes_too_large"
    INVALID_VALUE = "invalid_value"

    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    CUSTOMER_FORGOTTEN = "customer_forgotten"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One broken rule, addressed to a field, in the form every channel reports."""

    code: str
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        """The JSON shape shared by the DLQ, HTTP and CLI."""
        return {"code": str(self.code), "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = f" {self.field}" if self.field else ""
        return f"{self.code}{where}: {self.message}"


class EventcrmError(Exception):
    """Root of the project's exception hierarchy."""


class InvalidInteraction(EventcrmError):  # noqa: N818 - name is part of the public API
    """An interaction broke the contract; carries every problem found, not just one.

    Reporting all problems at once saves upstream teams a fix-resend loop per field.
    """

    rejections: tuple[Rejection, ...]

    def __init__(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            raise ValueError("InvalidInteraction needs at least one rejection")
        self.rejections = tuple(rejections)
        super().__init__("; ".join(str(r) for r in self.rejections))

    @property
    def first(self) -> Rejection:
        """The first problem, for channels that can show only one."""
        return self.rejections[0]


class InvalidMoney(EventcrmError, ValueError):  # noqa: N818 - name is part of the public API
    """An amount or currency that cannot be exact money; ``code`` says which rule."""

    code: Code

    def __init__(self, code: Code, message: str) -> None:
        self.code = code
        super().__init__(message)


class CurrencyMismatch(EventcrmError):  # noqa: N818 - name is part of the public API
    """Arithmetic or comparison across currencies, which has no exact meaning."""


class UserFacingError(EventcrmError):
    """An ordinary failure its user can fix: a bad setting, an unreachable database, an
    unwritable file. It carries a stable ``code`` (documented in docs/errors.md) and a
    ``hint`` saying how to fix it, so entry points print one line instead of a traceback.

    Raised where the cause is known; its category (the subclass) decides the exit code.
    """

    code: str = "error"

    def __init__(self, message: str, *, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (hint and code too): import workers raise these in other processes."""
        return (type(self), (self.message,), {"hint": self.hint, "code": self.code})


class ConfigurationError(UserFacingError):
    """A setting, policy file, key or schema the operator must fix: retrying won't help."""


class UnavailableError(UserFacingError):
    """A service (the database, the broker) cannot be reached: retrying later may help."""


class UsageError(UserFacingError):
    """A bad argument, or a file named on the command line that cannot be read or written."""
