"""The interaction contract: what upstream systems may send, and its validated form.

Validation happens once, at the edge. Everything behind it (store, projections,
streams) sees only :class:`Interaction`, so the rules here are the single place
where upstream data is judged. Pydantic does the per-field work in compiled code
(the bulk import budget is a few microseconds per interaction); our own rules run
as small validators raising the stable codes of :class:`domain.errors.Code`.

Decisions worth knowing:

* ``null`` for an optional field means the same as leaving it out (many JSON
  serializers emit nulls); required fields must not be ``null``.
* ``Interaction.facts`` holds the non-personal kind fields flat; the non-personal
  profile fields sit under ``facts["profile"]``. ``Interaction.personal`` holds
  name/email/phone under ``personal["profile"]``, ``comment``/``subject`` at top
  level and the whole ``attributes`` object under ``personal["attributes"]``.
* Normalizations (so equal meaning gives an equal canonical form): ``occurred_at``
  to UTC with microseconds (finer digits are truncated), ``amount`` quantized to
  the currency's minor unit, ``phone`` without spaces and dashes, ``language`` in
  conventional casing (``pt-BR``). Everything else is kept exactly as sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from domain.currencies import MINOR_UNITS
from domain.errors import Code, InvalidInteraction, InvalidMoney, Rejection
from domain.money import Money, check_amount


class Kind(StrEnum):
    """The interaction catalogue; values are the wire strings and are never renamed."""

    REGISTERED = "registered"
    PROFILE_UPDATED = "profile_updated"
    PURCHASE = "purchase"
    REFUND = "refund"
    SUBSCRIPTION_STARTED = "subscription_started"
    SUBSCRIPTION_RENEWED = "subscription_renewed"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    PAYMENT_FAILED = "payment_failed"
    SUPPORT_TICKET_OPENED = "support_ticket_opened"
    SUPPORT_TICKET_RESOLVED = "support_ticket_resolved"
    COMPLAINT = "complaint"
    SURVEY_RESPONSE = "survey_response"
    LOGIN = "login"
    VISIT = "visit"
    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"


MONEY_REQUIRED: Final[frozenset[Kind]] = frozenset({Kind.PURCHASE, Kind.REFUND})
MONEY_OPTIONAL: Final[frozenset[Kind]] = frozenset(
    {Kind.SUBSCRIPTION_STARTED, Kind.SUBSCRIPTION_RENEWED, Kind.PAYMENT_FAILED}
)

PERSONAL_FIELDS: Final[frozenset[str]] = frozenset(
    {"profile.name", "profile.email", "profile.phone", "comment", "subject", "attributes"}
)
"""Fields that may identify a person; ``attributes`` is free-form, so it counts too."""

MAX_ATTRIBUTES_BYTES: Final = 8 * 1024
MAX_ATTRIBUTES_DEPTH: Final = 5
"""The ``attributes`` object itself is depth 1; each nested object or list adds one."""
MAX_ATTRIBUTE_KEY: Final = 64
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)

_COMMON_FIELDS: Final = frozenset(
    {"event_id", "source", "customer_id", "kind", "occurred_at", "attributes"}
)
_MONEY_FIELDS: Final = frozenset({"amount", "currency"})
_PERSONAL_TOP: Final = frozenset({"comment", "subject"})
_PERSONAL_PROFILE: Final = frozenset({"name", "email", "phone"})
_PERSONAL_SCHEMA: Final[dict[str, Any]] = {"x-personal": True}

# ISO 3166-1 alpha-2, officially assigned codes, plus XK (Kosovo: user-assigned but
# used by the EU and most payment systems).
_COUNTRY_CODES: Final = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM
    BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX
    CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG
    GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR
    IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV
    LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE
    NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF
    WS YE YT ZA ZM ZW XK
    """
_COUNTRIES: Final = frozenset(_COUNTRY_CODES.split())

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_EMAIL = re.compile(r"[^\s@]{1,64}@[^\s@.]+(?:\.[^\s@.]+)*\.[^\s@.0-9]{2,}")
_PHONE_SEPARATORS = re.compile(r"[ \-]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_LANGUAGE = re.compile(
    r"(?P<lang>[A-Za-z]{2,3})(?:-(?P<script>[A-Za-z]{4}))?(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
)


# --- field rules -----------------------------------------------------------------


def _fail(code: Code, message: str) -> PydanticCustomError:
    return PydanticCustomError(code.value, message)


def _check_token(value: str) -> str:
    """Identifiers and short codes: one line, printable, not blank."""
    if _CONTROL.search(value):
        raise _fail(Code.INVALID_CHARACTERS, "control characters (including NUL) are not allowed")
    if value.isspace():
        raise _fail(Code.EMPTY, "must not be blank")
    return value


def _check_text(value: str) -> str:
    """Free text: line breaks and tabs allowed, other control characters not."""
    if _CONTROL_IN_TEXT.search(value):
        raise _fail(Code.INVALID_CHARACTERS, "control characters (including NUL) are not allowed")
    if value.isspace():
        raise _fail(Code.EMPTY, "must not be blank")
    return value


def _parse_occurred_at(value: Any, info: ValidationInfo) -> datetime:
    if not isinstance(value, str):
        raise _fail(Code.WRONG_TYPE, "must be an RFC 3339 timestamp string")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _fail(
            Code.INVALID_TIMESTAMP,
            "must be an RFC 3339 timestamp such as 2024-05-01T12:30:00+02:00",
        )
    if match["offset"] is None:
        raise _fail(Code.MISSING_OFFSET, "must carry a UTC offset, such as Z or +02:00")
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise _fail(Code.INVALID_TIMESTAMP, "is not a valid date and time") from None
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        raise _fail(Code.OUT_OF_RANGE, "is outside the representable range") from None
    if instant < EARLIEST:
        raise _fail(Code.OUT_OF_RANGE, "must not be before 1970-01-01T00:00:00Z")
    context = info.context
    if context is not None and instant > context["not_after"]:
        raise _fail(Code.IN_FUTURE, "is further in the future than the allowed clock skew")
    return instant


def _check_amount(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(
            Code.WRONG_TYPE,
            'amount must be a JSON string holding a decimal, such as "10.50": '
            "JSON numbers are refused because many parsers turn them into floats",
        )
    try:
        check_amount(value)
    except InvalidMoney as exc:
        raise _fail(exc.code, str(exc)) from None
    return value


def _check_currency(value: str) -> str:
    if value not in MINOR_UNITS:
        raise _fail(
            Code.INVALID_CURRENCY, "must be an ISO 4217 currency code in upper case, such as EUR"
        )
    return value


def _check_score(value: int) -> int:
    if not 0 <= value <= 10:
        raise _fail(Code.INVALID_SCORE, "must be an integer from 0 to 10")
    return value


def _check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or _CONTROL.search(value):
        raise _fail(Code.INVALID_EMAIL, "must look like name@example.com")
    return value


def _normalize_phone(value: str) -> str:
    digits = _PHONE_SEPARATORS.sub("", value)
    if not _E164.fullmatch(digits):
        raise _fail(
            Code.INVALID_PHONE, "must be E.164: + then 7 to 15 digits (spaces and dashes allowed)"
        )
    return digits


def _check_country(value: str) -> str:
    if value not in _COUNTRIES:
        raise _fail(
            Code.INVALID_COUNTRY, "must be an ISO 3166-1 alpha-2 code in upper case, such as DE"
        )
    return value


def _normalize_language(value: str) -> str:
    match = _LANGUAGE.fullmatch(value)
    if match is None:
        raise _fail(Code.INVALID_LANGUAGE, "must be a BCP 47 language tag such as en or pt-BR")
    tag = match["lang"].lower()
    if match["script"]:
        tag += "-" + match["script"].title()
    if match["region"]:
        tag += "-" + match["region"].upper()
    return tag


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _fail(
            Code.INVALID_TIMEZONE, "must be an IANA time zone such as Europe/Berlin"
        ) from None
    return value


def _attribute_shape(value: Any, depth: int) -> None:
    """Walk attributes once: JSON-safe values, bounded depth, short string keys."""
    if isinstance(value, dict):
        if depth > MAX_ATTRIBUTES_DEPTH:
            raise _fail(Code.TOO_DEEP, f"attributes nest deeper than {MAX_ATTRIBUTES_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(Code.WRONG_TYPE, "attribute keys must be strings")
            if len(key) > MAX_ATTRIBUTE_KEY:
                raise _fail(
                    Code.ATTRIBUTES_TOO_LARGE,
                    f"attribute keys must be at most {MAX_ATTRIBUTE_KEY} characters",
                )
            _attribute_shape(item, depth + 1)
    elif isinstance(value, list):
        if depth > MAX_ATTRIBUTES_DEPTH:
            raise _fail(Code.TOO_DEEP, f"attributes nest deeper than {MAX_ATTRIBUTES_DEPTH} levels")
        for item in value:
            _attribute_shape(item, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(Code.WRONG_TYPE, "attribute numbers must be finite")
    elif not (value is None or isinstance(value, str | int)):
        raise _fail(Code.WRONG_TYPE, "attribute values must be JSON values")


def _check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    _attribute_shape(value, 1)
    if len(json.dumps(value, separators=(",", ":"))) > MAX_ATTRIBUTES_BYTES:
        raise _fail(
            Code.ATTRIBUTES_TOO_LARGE,
            f"attributes must serialize to at most {MAX_ATTRIBUTES_BYTES} bytes",
        )
    return value


# --- field types -----------------------------------------------------------------

_Id = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_check_token)]
_Source = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_token)
]
_Code64 = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_token)
]
_Code32 = Annotated[
    str, StringConstraints(min_length=1, max_length=32), AfterValidator(_check_token)
]
_Line200 = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_token)
]
_Page = Annotated[
    str, StringConstraints(min_length=1, max_length=512), AfterValidator(_check_token)
]
_Link = Annotated[
    str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_check_token)
]
_Comment = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_check_text)
]
_OccurredAt = Annotated[
    datetime,
    PlainValidator(_parse_occurred_at),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with a UTC offset; stored as UTC; not before 1970, "
            "not further in the future than the configured skew",
        }
    ),
]
_Amount = Annotated[
    str,
    PlainValidator(_check_amount),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{1,18}(\\.[0-9]+)?$",
            "description": "non-negative exact decimal as a string; at most the "
            "currency's minor-unit digits after the point (trailing zeros aside)",
        }
    ),
]
_Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "enum": sorted(MINOR_UNITS)}),
]
_Score = Annotated[
    int, AfterValidator(_check_score), Field(json_schema_extra={"minimum": 0, "maximum": 10})
]
_Email = Annotated[
    str, StringConstraints(min_length=1, max_length=254), AfterValidator(_check_email)
]
_Phone = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32),
    AfterValidator(_normalize_phone),
    Field(json_schema_extra={"description": "E.164, e.g. +49 30 1234567"}),
]
_Country = Annotated[
    str,
    AfterValidator(_check_country),
    WithJsonSchema({"type": "string", "enum": sorted(_COUNTRIES)}),
]
_Language = Annotated[
    str,
    StringConstraints(min_length=1, max_length=35),
    AfterValidator(_normalize_language),
    Field(json_schema_extra={"description": "BCP 47 tag such as en or pt-BR"}),
]
_Timezone = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_check_timezone),
    Field(json_schema_extra={"description": "IANA time zone such as Europe/Berlin"}),
]
_Attributes = Annotated[dict[str, Any], AfterValidator(_check_attributes)]
_Channel = Literal["web", "app", "store", "phone", "email", "other"]


# --- wire models -----------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)


class _Profile(_Strict, title="profile"):
    name: _Line200 | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)
    email: _Email | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)
    phone: _Phone | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)
    country: _Country | None = None
    language: _Language | None = None
    timezone: _Timezone | None = None
    industry: _Code64 | None = None
    size: _Code32 | None = None


class _Envelope(BaseModel, title="envelope"):
    """The fields every kind shares; validated alone to report them when ``kind`` is bad."""

    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)

    event_id: _Id
    source: _Source
    customer_id: _Id
    occurred_at: _OccurredAt
    attributes: _Attributes | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)


class _Base(_Envelope):
    model_config = ConfigDict(extra="forbid")


class _Registered(_Base, title="registered"):
    kind: Literal["registered"]
    profile: _Profile | None = None


class _ProfileUpdated(_Base, title="profile_updated"):
    kind: Literal["profile_updated"]
    profile: _Profile

    @field_validator("profile")
    @classmethod
    def _not_empty(cls, profile: _Profile) -> _Profile:
        if all(value is None for value in vars(profile).values()):
            raise _fail(Code.EMPTY, "profile must contain at least one field")
        return profile


class _Purchase(_Base, title="purchase"):
    kind: Literal["purchase"]
    amount: _Amount
    currency: _Currency
    order_id: _Id | None = None


class _Refund(_Base, title="refund"):
    kind: Literal["refund"]
    amount: _Amount
    currency: _Currency
    order_id: _Id | None = Field(default=None, description="the purchase refunded")


class _SubscriptionStarted(_Base, title="subscription_started"):
    kind: Literal["subscription_started"]
    subscription_id: _Id
    plan: _Code64 | None = None
    amount: _Amount | None = Field(default=None, description="together with currency, or neither")
    currency: _Currency | None = None


class _SubscriptionRenewed(_Base, title="subscription_renewed"):
    kind: Literal["subscription_renewed"]
    subscription_id: _Id
    plan: _Code64 | None = None
    amount: _Amount | None = Field(default=None, description="together with currency, or neither")
    currency: _Currency | None = None


class _SubscriptionCancelled(_Base, title="subscription_cancelled"):
    kind: Literal["subscription_cancelled"]
    subscription_id: _Id
    plan: _Code64 | None = None
    reason: _Code64 | None = None
    comment: _Comment | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)


class _PaymentFailed(_Base, title="payment_failed"):
    kind: Literal["payment_failed"]
    subscription_id: _Id | None = None
    reason: _Code64 | None = None
    amount: _Amount | None = Field(default=None, description="together with currency, or neither")
    currency: _Currency | None = None


class _SupportTicketOpened(_Base, title="support_ticket_opened"):
    kind: Literal["support_ticket_opened"]
    ticket_id: _Id
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    subject: _Line200 | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)


class _SupportTicketResolved(_Base, title="support_ticket_resolved"):
    kind: Literal["support_ticket_resolved"]
    ticket_id: _Id
    satisfied: bool | None = None


class _Complaint(_Base, title="complaint"):
    kind: Literal["complaint"]
    ticket_id: _Id | None = None
    severity: Literal["low", "medium", "high"] | None = None
    comment: _Comment | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)


class _SurveyResponse(_Base, title="survey_response"):
    kind: Literal["survey_response"]
    score: _Score
    survey: _Code64 | None = None
    comment: _Comment | None = Field(default=None, json_schema_extra=_PERSONAL_SCHEMA)


class _Login(_Base, title="login"):
    kind: Literal["login"]
    channel: _Channel | None = None
    page: _Page | None = None


class _Visit(_Base, title="visit"):
    kind: Literal["visit"]
    channel: _Channel | None = None
    page: _Page | None = None


class _EmailOpened(_Base, title="email_opened"):
    kind: Literal["email_opened"]
    campaign_id: _Id | None = None


class _EmailClicked(_Base, title="email_clicked"):
    kind: Literal["email_clicked"]
    campaign_id: _Id | None = None
    link: _Link | None = None


_Wire = Annotated[
    _Registered
    | _ProfileUpdated
    | _Purchase
    | _Refund
    | _SubscriptionStarted
    | _SubscriptionRenewed
    | _SubscriptionCancelled
    | _PaymentFailed
    | _SupportTicketOpened
    | _SupportTicketResolved
    | _Complaint
    | _SurveyResponse
    | _Login
    | _Visit
    | _EmailOpened
    | _EmailClicked,
    Field(discriminator="kind"),
]
_WIRE: Final[TypeAdapter[_Base]] = TypeAdapter(_Wire)
_ENVELOPE: Final = TypeAdapter(_Envelope)


_KINDS: Final = {kind.value: kind for kind in Kind}


def _kinds_of_wire_models() -> set[str]:
    return {get_args(cls.model_fields["kind"].annotation)[0] for cls in _Base.__subclasses__()}


if _kinds_of_wire_models() != {kind.value for kind in Kind}:  # pragma: no cover
    raise RuntimeError("every Kind needs exactly one wire model, and vice versa")


# --- validated form ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interaction:
    """A validated interaction: the only shape the rest of the system sees.

    ``facts`` and ``personal`` are plain dicts of JSON values, cheap to pickle and
    serialize (unlike read-only proxies); treat them as read-only.
    """

    event_id: str
    source: str
    customer_id: str
    kind: Kind
    occurred_at: datetime
    money: Money | None
    facts: Mapping[str, Any]
    personal: Mapping[str, Any] | None

    def canonical(self) -> dict[str, Any]:
        """The normalized wire object: equal meaning gives an equal dict.

        The store digests it to tell a harmless redelivery from a conflicting
        duplicate, so every spelling freedom of the wire (offsets, trailing zeros,
        phone separators, ``null`` for absent) is removed here.
        """
        wire: dict[str, Any] = {
            "event_id": self.event_id,
            "source": self.source,
            "customer_id": self.customer_id,
            "kind": self.kind.value,
            "occurred_at": _utc_text(self.occurred_at),
        }
        if self.money is not None:
            wire["amount"] = self.money.to_wire()
            wire["currency"] = self.money.currency
        personal = self.personal or {}
        for name, value in (*self.facts.items(), *personal.items()):
            if name != "profile":
                wire[name] = _json_copy(value)
        profile = {**self.facts.get("profile", {}), **personal.get("profile", {})}
        if profile:
            wire["profile"] = profile
        return wire

    def to_wire(self) -> dict[str, Any]:
        """A valid wire object meaning the same; the canonical form is exactly that."""
        return self.canonical()


def _utc_text(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``; isoformat is the fastest exact formatter."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("occurred_at must be timezone-aware")
    if offset:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def parse_interaction(
    raw: Mapping[str, Any], *, now: datetime, max_future_skew: timedelta
) -> Interaction:
    """Validate one decoded wire object; raise InvalidInteraction listing every problem.

    All problems, not just the first, so upstream fixes a payload in one round.
    Cross-field rules (amount with currency, amount precision per currency) are
    checked once every field is valid on its own, so they are reported only then.

    A payload is first tried on :func:`_parse_fast`, which only ever accepts; on any
    doubt it steps aside and the pydantic models judge the payload and collect the
    rejections, exactly as if the fast path did not exist.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if type(raw) is dict:  # the common case, without the slower ABC check
        data: dict[str, Any] = raw
    elif isinstance(raw, Mapping):
        data = raw if isinstance(raw, dict) else dict(raw)
    else:
        raise InvalidInteraction(
            [Rejection(Code.NOT_AN_OBJECT.value, None, "an interaction must be a JSON object")]
        )
    not_after = now + max_future_skew
    interaction = _parse_fast(data, not_after)
    if interaction is None:
        interaction = _parse_full(data, not_after)
    return interaction


def _parse_full(data: dict[str, Any], not_after: datetime) -> Interaction:
    """The reference path: pydantic validation, every problem reported."""
    context = {"not_after": not_after}
    try:
        model = _WIRE.validate_python(data, context=context)
    except ValidationError as exc:
        raise InvalidInteraction(_rejections(exc, data, context)) from None
    return _interaction(model)


def _interaction(model: _Base) -> Interaction:
    fields = vars(model)
    kind = _KINDS[fields["kind"]]
    money = None
    amount, currency = fields.get("amount"), fields.get("currency")
    if amount is not None and currency is not None:
        try:
            money = Money.parse(amount, currency)
        except InvalidMoney as exc:
            raise InvalidInteraction([Rejection(exc.code.value, "amount", str(exc))]) from None
    elif amount is not None or currency is not None:
        missing = "currency" if currency is None else "amount"
        raise InvalidInteraction(
            [Rejection(Code.MISSING_FIELD.value, missing, "amount and currency come together")]
        )
    facts: dict[str, Any] = {}
    personal: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or name in _COMMON_FIELDS or name in _MONEY_FIELDS:
            continue
        if name == "profile":
            _split_profile(vars(value), facts, personal)
        elif name in _PERSONAL_TOP:
            personal[name] = value
        else:
            facts[name] = value
    if model.attributes is not None:
        personal["attributes"] = model.attributes
    return Interaction(
        event_id=model.event_id,
        source=model.source,
        customer_id=model.customer_id,
        kind=kind,
        occurred_at=model.occurred_at,
        money=money,
        facts=facts,
        personal=personal or None,
    )


def _split_profile(
    profile: dict[str, Any], facts: dict[str, Any], personal: dict[str, Any]
) -> None:
    public = {k: v for k, v in profile.items() if v is not None and k not in _PERSONAL_PROFILE}
    private = {k: v for k, v in profile.items() if v is not None and k in _PERSONAL_PROFILE}
    if public:
        facts["profile"] = public
    if private:
        personal["profile"] = private


# --- fast path ------------------------------------------------------------------------
#
# The bulk import spends its budget here, and almost every payload is valid. The fast
# path applies the same rules as the models in plain Python, but only to *accept*:
# anything it is not sure about (a wrong type, a str subclass, a bad value, a missing
# field, ...) makes it return None, and the models then validate the payload and
# report every problem. So rejections come from one place only, and the fast path
# can never reject what the models accept. Its per-field rules are derived from the
# models' own annotations below; a field type without a fast rule disables the fast
# path for that kind (still correct, only slower).

_BAD: Final = object()
"""Returned by a fast check: the value is (or may be) invalid; let pydantic judge it."""

_Check = Callable[[Any], Any]

# Control characters, and lone surrogates (pydantic refuses those in constrained strings).
_UNSAFE_TOKEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_RFC3339_WITH_OFFSET = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _string_bounds(alias: object, validator: Callable[..., Any]) -> tuple[int, int]:
    """``(min_length, max_length)`` of a constrained-string alias checked by ``validator``."""
    metadata = get_args(alias)[1:]
    bounds = [m for m in metadata if isinstance(m, StringConstraints)]
    if get_args(alias)[0] is not str or AfterValidator(validator) not in metadata or not bounds:
        raise RuntimeError(f"fast path out of step with {alias}")  # pragma: no cover
    low, high = bounds[0].min_length, bounds[0].max_length
    if low is None or high is None:  # pragma: no cover
        raise RuntimeError(f"fast path needs both length bounds of {alias}")
    return low, high


def _fast_string(alias: object, validator: Callable[..., Any], unsafe: re.Pattern[str]) -> _Check:
    """Identifiers, codes and free text: ``_check_token`` / ``_check_text`` after the bounds."""
    low, high = _string_bounds(alias, validator)

    def check(value: Any) -> Any:
        if (
            type(value) is not str
            or not low <= len(value) <= high
            # isprintable() is False for every control character and surrogate
            or (not value.isprintable() and unsafe.search(value))
            or value.isspace()
        ):
            return _BAD
        return value

    return check


_FAST_EMAIL_BOUNDS: Final = _string_bounds(_Email, _check_email)


def _fast_email(value: Any) -> Any:
    low, high = _FAST_EMAIL_BOUNDS
    if (
        type(value) is not str
        or not low <= len(value) <= high
        or not _EMAIL.fullmatch(value)
        or _UNSAFE_TOKEN.search(value)
    ):
        return _BAD
    return value


_FAST_PHONE_BOUNDS: Final = _string_bounds(_Phone, _normalize_phone)


def _fast_phone(value: Any) -> Any:
    low, high = _FAST_PHONE_BOUNDS
    if type(value) is not str or not low <= len(value) <= high:
        return _BAD
    digits = _PHONE_SEPARATORS.sub("", value)
    return digits if _E164.fullmatch(digits) else _BAD  # only ASCII can match


_FAST_LANGUAGE_BOUNDS: Final = _string_bounds(_Language, _normalize_language)


def _fast_language(value: Any) -> Any:
    low, high = _FAST_LANGUAGE_BOUNDS
    if type(value) is not str or not low <= len(value) <= high or not _LANGUAGE.fullmatch(value):
        return _BAD
    return _normalize_language(value)  # only ASCII can match


_FAST_TIMEZONE_BOUNDS: Final = _string_bounds(_Timezone, _check_timezone)


def _fast_timezone(value: Any) -> Any:
    low, high = _FAST_TIMEZONE_BOUNDS
    if type(value) is not str or not low <= len(value) <= high or not value.isascii():
        return _BAD
    try:
        return _check_timezone(value)
    except PydanticCustomError:
        return _BAD


def _fast_member(allowed: Collection[str]) -> _Check:
    def check(value: Any) -> Any:
        return value if type(value) is str and value in allowed else _BAD

    return check


def _fast_amount(value: Any) -> Any:
    """Only the type: the syntax is checked once, by ``Money.parse``."""
    return value if type(value) is str else _BAD


def _fast_score(value: Any) -> Any:
    return value if type(value) is int and 0 <= value <= 10 else _BAD


def _fast_bool(value: Any) -> Any:
    return value if type(value) is bool else _BAD


def _fast_attributes(value: Any) -> Any:
    if type(value) is not dict or any(type(key) is not str for key in value):
        return _BAD
    try:
        _check_attributes(value)
    except PydanticCustomError:
        return _BAD
    return dict(value)  # pydantic hands over a copy too


_FAST_TYPES: Final[list[tuple[object, _Check]]] = [
    (_Id, _fast_string(_Id, _check_token, _UNSAFE_TOKEN)),
    (_Source, _fast_string(_Source, _check_token, _UNSAFE_TOKEN)),
    (_Code64, _fast_string(_Code64, _check_token, _UNSAFE_TOKEN)),
    (_Code32, _fast_string(_Code32, _check_token, _UNSAFE_TOKEN)),
    (_Line200, _fast_string(_Line200, _check_token, _UNSAFE_TOKEN)),
    (_Page, _fast_string(_Page, _check_token, _UNSAFE_TOKEN)),
    (_Link, _fast_string(_Link, _check_token, _UNSAFE_TOKEN)),
    (_Comment, _fast_string(_Comment, _check_text, _UNSAFE_TEXT)),
    (_Email, _fast_email),
    (_Phone, _fast_phone),
    (_Language, _fast_language),
    (_Timezone, _fast_timezone),
    (_Country, _fast_member(_COUNTRIES)),
    (_Currency, _fast_member(MINOR_UNITS.keys())),
    (_Amount, _fast_amount),
    (_Score, _fast_score),
    (_Attributes, _fast_attributes),
    (bool, _fast_bool),
]

_FACT, _PERSONAL, _PROFILE, _MONEY = range(4)


def _fast_check_of(hint: object) -> _Check | None:
    for alias, check in _FAST_TYPES:
        if hint == alias:
            return check
    if get_origin(hint) is Literal and all(type(choice) is str for choice in get_args(hint)):
        return _fast_member(frozenset(get_args(hint)))
    return None


def _fast_fields(
    model: type[BaseModel], skip: tuple[str, ...] = ()
) -> tuple[tuple[str, _Check, bool, int], ...] | None:
    """``(name, check, required, role)`` per field in declaration order, or None.

    None when the model has a rule the fast path does not know (a field type without
    a fast check, a nullable required field, a validator other than the empty-profile
    one), so that kind always goes through pydantic.
    """
    decorators = model.__pydantic_decorators__
    own = {name for name in decorators.field_validators if name != "_not_empty"}
    if own or decorators.model_validators or decorators.validators or decorators.root_validators:
        return None
    hints = get_type_hints(model, include_extras=True)
    specs = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        hint = hints[name]
        args = get_args(hint)
        nullable = get_origin(hint) is not Annotated and type(None) in args
        if nullable:
            others = [arg for arg in args if arg is not type(None)]
            if len(others) != 1:
                return None
            hint = others[0]
        required = info.is_required()
        if required == nullable or (not required and info.default is not None):
            return None  # required fields are not nullable; optional ones default to None
        check = _fast_check_of(hint)
        if check is None:
            return None
        role = {"amount": _MONEY, "currency": _MONEY, "profile": _PROFILE}.get(name, _FACT)
        if name in _PERSONAL_TOP:
            role = _PERSONAL
        specs.append((name, check, required, role))
    return tuple(specs)


_PROFILE_FIELDS: Final = _fast_fields(_Profile)
_PROFILE_NAMES: Final = frozenset(_Profile.model_fields)


def _fast_profile(value: Any) -> Any:
    """A profile as ``(public, private)`` dicts in declaration order, like _split_profile."""
    if type(value) is not dict or not _PROFILE_NAMES.issuperset(value) or not value:
        return _BAD  # an empty profile may be refused (profile_updated): let pydantic say
    public: dict[str, Any] = {}
    private: dict[str, Any] = {}
    for name, check, _, _ in _PROFILE_FIELDS or ():
        item = value.get(name)
        if item is None:
            continue
        item = check(item)
        if item is _BAD:
            return _BAD
        if name in _PERSONAL_PROFILE:
            private[name] = item
        else:
            public[name] = item
    if not public and not private:
        return _BAD
    return public, private


if _PROFILE_FIELDS is not None:
    _FAST_TYPES.append((_Profile, _fast_profile))

_ENVELOPE_NAMES: Final = ("event_id", "source", "customer_id", "occurred_at", "attributes", "kind")
_ENVELOPE_HINTS: Final[dict[str, object]] = {
    "event_id": _Id,
    "source": _Source,
    "customer_id": _Id,
    "occurred_at": _OccurredAt,
    "attributes": _Attributes | None,
}
"""The shared fields, which :func:`_parse_fast` checks inline."""


def _envelope_in_step() -> bool:
    hints = get_type_hints(_Envelope, include_extras=True)
    return (
        tuple(_Envelope.model_fields) == _ENVELOPE_NAMES[:-1]
        and all(hints[name] == hint for name, hint in _ENVELOPE_HINTS.items())
        and [name for name, info in _Envelope.model_fields.items() if info.is_required()]
        == ["event_id", "source", "customer_id", "occurred_at"]
        and _fast_fields(_Envelope, skip=("occurred_at",)) is not None
    )


class _FastKind:
    """What the fast path needs to know about one kind."""

    __slots__ = ("fields", "kind", "money_required", "names")

    def __init__(self, kind: Kind, fields: tuple[tuple[str, _Check, bool, int], ...]) -> None:
        self.kind = kind
        self.names = frozenset(_ENVELOPE_NAMES) | {name for name, *_ in fields}
        self.fields = fields
        self.money_required = kind in MONEY_REQUIRED


def _fast_kinds() -> dict[str, _FastKind]:
    kinds = {}
    for model in _Base.__subclasses__():
        names = tuple(model.model_fields)
        specs = _fast_fields(model, skip=_ENVELOPE_NAMES)
        if specs is None or names[: len(_ENVELOPE_NAMES)] != _ENVELOPE_NAMES:
            continue
        kind = _KINDS[get_args(model.model_fields["kind"].annotation)[0]]
        kinds[kind.value] = _FastKind(kind, specs)
    return kinds


_FAST_KINDS: Final = _fast_kinds() if _envelope_in_step() else {}
_check_id = _fast_string(_Id, _check_token, _UNSAFE_TOKEN)
_check_source = _fast_string(_Source, _check_token, _UNSAFE_TOKEN)
_new = object.__new__
_set_event_id, _set_source, _set_customer_id, _set_kind = (
    Interaction.__dict__[name].__set__ for name in ("event_id", "source", "customer_id", "kind")
)
_set_occurred_at, _set_money, _set_facts, _set_personal = (
    Interaction.__dict__[name].__set__ for name in ("occurred_at", "money", "facts", "personal")
)
if [f.name for f in fields(Interaction)] != [  # pragma: no cover
    "event_id",
    "source",
    "customer_id",
    "kind",
    "occurred_at",
    "money",
    "facts",
    "personal",
] or hasattr(Interaction, "__post_init__"):
    raise RuntimeError("the fast path builds Interaction field by field; update it")


def _parse_fast(data: dict[str, Any], not_after: datetime) -> Interaction | None:
    """The Interaction for a valid payload, or None whenever pydantic has to judge it."""
    kind = data.get("kind")
    spec = _FAST_KINDS.get(kind) if type(kind) is str and type(data) is dict else None
    if spec is None or not spec.names.issuperset(data):
        return None
    event_id = _check_id(data.get("event_id"))
    source = _check_source(data.get("source"))
    customer_id = _check_id(data.get("customer_id"))
    occurred_at = _fast_occurred_at(data.get("occurred_at"), not_after)
    attributes = data.get("attributes")
    if attributes is not None:
        attributes = _fast_attributes(attributes)
    if _BAD in (event_id, source, customer_id, occurred_at, attributes):
        return None
    body = _fast_body(spec, data)
    if body is None:
        return None
    money, facts, personal = body
    if attributes is not None:
        personal["attributes"] = attributes
    interaction = _new(Interaction)
    _set_event_id(interaction, event_id)
    _set_source(interaction, source)
    _set_customer_id(interaction, customer_id)
    _set_kind(interaction, spec.kind)
    _set_occurred_at(interaction, occurred_at)
    _set_money(interaction, money)
    _set_facts(interaction, facts)
    _set_personal(interaction, personal or None)
    return interaction


def _fast_body(
    spec: _FastKind, data: dict[str, Any]
) -> tuple[Money | None, dict[str, Any], dict[str, Any]] | None:
    """Money, facts and personal data of the kind's own fields, or None."""
    facts: dict[str, Any] = {}
    personal: dict[str, Any] = {}
    money: dict[str, str] = {}
    for name, check, required, role in spec.fields:
        value = data.get(name)
        if value is None:
            if required:
                return None
            continue
        value = check(value)
        if value is _BAD:
            return None
        if role == _FACT:
            facts[name] = value
        elif role == _MONEY:
            money[name] = value
        elif role == _PROFILE:
            if value[0]:
                facts["profile"] = value[0]
            if value[1]:
                personal["profile"] = value[1]
        else:
            personal[name] = value
    if not money:
        return None, facts, personal
    try:  # a KeyError: one half is missing, which pydantic reports
        return Money.parse(money["amount"], money["currency"]), facts, personal
    except (InvalidMoney, KeyError):
        return None


def _fast_occurred_at(value: Any, not_after: datetime) -> Any:
    """``_parse_occurred_at`` for a valid timestamp, else _BAD."""
    if type(value) is not str or _RFC3339_WITH_OFFSET.fullmatch(value) is None:
        return _BAD
    try:
        instant = datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return _BAD
    return instant if EARLIEST <= instant <= not_after else _BAD


# --- error translation --------------------------------------------------------------

_OWN_CODES: Final = frozenset(code.value for code in Code)
_PYDANTIC_CODES: Final[dict[str, Code]] = {
    "missing": Code.MISSING_FIELD,
    "extra_forbidden": Code.UNKNOWN_FIELD,
    "string_too_long": Code.TOO_LONG,
    "string_too_short": Code.EMPTY,
    "literal_error": Code.INVALID_CHOICE,
    "union_tag_invalid": Code.UNKNOWN_KIND,
    "union_tag_not_found": Code.MISSING_FIELD,
    "int_from_float": Code.WRONG_TYPE,
    "string_unicode": Code.WRONG_TYPE,
}
_MESSAGES: Final[dict[Code, str]] = {
    Code.MISSING_FIELD: "required field is missing",
    Code.EMPTY: "must not be empty",
    Code.UNKNOWN_FIELD: "not part of the contract for this kind; send extra data in attributes",
    Code.UNKNOWN_KIND: "unknown kind; expected one of " + ", ".join(kind.value for kind in Kind),
}


def _code_of(error_type: str) -> str:
    if error_type in _OWN_CODES:
        return error_type
    code = _PYDANTIC_CODES.get(error_type)
    if code is not None:
        return code.value
    if error_type.endswith("_type"):
        return Code.WRONG_TYPE.value
    return Code.INVALID_VALUE.value


def _rejection(error: ErrorDetails, tag: object) -> Rejection:
    error_type = error["type"]
    loc = error["loc"]
    if loc and loc[0] == tag:
        loc = loc[1:]
    if error_type in {"union_tag_invalid", "union_tag_not_found"}:
        loc = ("kind",)
    code = _code_of(error_type)
    if error_type == "union_tag_invalid" and not isinstance(tag, str):
        code = Code.WRONG_TYPE.value
        message = "kind must be a string"
    else:
        message = (
            _MESSAGES.get(Code(code), error["msg"])
            if error_type in _PYDANTIC_CODES
            else error["msg"]
        )
    field = ".".join(str(part) for part in loc) or None
    return Rejection(code, field, message)


def _rejections(
    exc: ValidationError, data: dict[str, Any], context: dict[str, datetime]
) -> list[Rejection]:
    tag = data.get("kind")
    errors = exc.errors(include_url=False, include_input=False)
    rejections = [_rejection(error, tag) for error in errors]
    if any(error["type"] in {"union_tag_invalid", "union_tag_not_found"} for error in errors):
        # Without a valid kind pydantic stops at the tag; still report the shared fields.
        try:
            _ENVELOPE.validate_python(data, context=context)
        except ValidationError as envelope_exc:
            rejections.extend(
                _rejection(error, None)
                for error in envelope_exc.errors(include_url=False, include_input=False)
            )
    return rejections


# --- published contract -------------------------------------------------------------


def interaction_json_schema() -> dict[str, Any]:
    """The wire contract as JSON Schema (draft 2020-12) for upstream teams.

    A discriminated union on ``kind`` (``oneOf`` + ``discriminator``) keeps the
    per-kind requirements visible. Generated from the same models that validate,
    so the document cannot drift from the behaviour. Fields marked
    ``"x-personal": true`` are personal data and are kept apart from the facts.
    """
    schema = _public_refs(_WIRE.json_schema())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "eventcrm interaction",
        "description": (
            "One customer interaction published to eventcrm.interactions: a UTF-8 JSON "
            "object of at most 64 KiB, Kafka key = customer_id. (source, event_id) is "
            "the idempotency key. Unknown fields are rejected; put extra data in "
            "attributes (at most 8 KiB serialized, depth 5, keys up to 64 characters)."
        ),
        **schema,
    }


def _public_refs(node: Any) -> Any:
    """Drop the leading underscore of private model names from ``$defs`` and refs."""
    if isinstance(node, dict):
        return {
            key.removeprefix("_"): _public_refs(value)
            if not (isinstance(value, str) and value.startswith("#/$defs/_"))
            else value.replace("#/$defs/_", "#/$defs/", 1)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_public_refs(item) for item in node]
    return node
