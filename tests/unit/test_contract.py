"""The interaction wire contract: what is accepted, what is rejected and how it is named."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import Code, InvalidInteraction, Rejection
from domain.interactions import (
    MONEY_OPTIONAL,
    MONEY_REQUIRED,
    PERSONAL_FIELDS,
    Interaction,
    Kind,
    interaction_json_schema,
    parse_interaction,
)
from domain.money import Money

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)

COMMON: dict[str, Any] = {
    "event_id": "evt-1",
    "source": "shop",
    "customer_id": "cust-1",
    "occurred_at": "2024-05-01T12:00:00+02:00",
}

# The smallest valid payload of each kind (beyond the common fields), and a full one.
MINIMAL: dict[Kind, dict[str, Any]] = {
    Kind.REGISTERED: {},
    Kind.PROFILE_UPDATED: {"profile": {"country": "FR"}},
    Kind.PURCHASE: {"amount": "10.50", "currency": "EUR"},
    Kind.REFUND: {"amount": "3", "currency": "USD"},
    Kind.SUBSCRIPTION_STARTED: {"subscription_id": "S1"},
    Kind.SUBSCRIPTION_RENEWED: {"subscription_id": "S1"},
    Kind.SUBSCRIPTION_CANCELLED: {"subscription_id": "S1"},
    Kind.PAYMENT_FAILED: {},
    Kind.SUPPORT_TICKET_OPENED: {"ticket_id": "T1"},
    Kind.SUPPORT_TICKET_RESOLVED: {"ticket_id": "T1"},
    Kind.COMPLAINT: {},
    Kind.SURVEY_RESPONSE: {"score": 0},
    Kind.LOGIN: {},
    Kind.VISIT: {},
    Kind.EMAIL_OPENED: {},
    Kind.EMAIL_CLICKED: {},
}
FULL: dict[Kind, dict[str, Any]] = {
    Kind.REGISTERED: {
        "profile": {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20-7946 0958",
            "country": "GB",
            "language": "en-GB",
            "timezone": "Europe/London",
            "industry": "retail",
            "size": "11-50",
        }
    },
    Kind.PROFILE_UPDATED: {"profile": {"email": "new@example.org", "language": "pt-BR"}},
    Kind.PURCHASE: {"amount": "129.90", "currency": "EUR", "order_id": "O-1"},
    Kind.REFUND: {"amount": "129.90", "currency": "EUR", "order_id": "O-1"},
    Kind.SUBSCRIPTION_STARTED: {
        "subscription_id": "S1",
        "plan": "pro",
        "amount": "49",
        "currency": "USD",
    },
    Kind.SUBSCRIPTION_RENEWED: {
        "subscription_id": "S1",
        "plan": "pro",
        "amount": "5000",
        "currency": "JPY",
    },
    Kind.SUBSCRIPTION_CANCELLED: {
        "subscription_id": "S1",
        "plan": "pro",
        "reason": "too_expensive",
        "comment": "Too pricey.\nSorry!",
    },
    Kind.PAYMENT_FAILED: {
        "subscription_id": "S1",
        "reason": "card_declined",
        "amount": "1.500",
        "currency": "BHD",
    },
    Kind.SUPPORT_TICKET_OPENED: {"ticket_id": "T1", "priority": "urgent", "subject": "Broken"},
    Kind.SUPPORT_TICKET_RESOLVED: {"ticket_id": "T1", "satisfied": False},
    Kind.COMPLAINT: {"ticket_id": "T2", "severity": "high", "comment": "Late delivery"},
    Kind.SURVEY_RESPONSE: {"score": 10, "survey": "nps-q1", "comment": "Great"},
    Kind.LOGIN: {"channel": "app", "page": "/home"},
    Kind.VISIT: {"channel": "web", "page": "/pricing?plan=pro"},
    Kind.EMAIL_OPENED: {"campaign_id": "C1"},
    Kind.EMAIL_CLICKED: {"campaign_id": "C1", "link": "https://example.com/x"},
}


def wire(kind: Kind, /, **fields: Any) -> dict[str, Any]:
    """A valid minimal payload of ``kind`` with ``fields`` overriding it."""
    return {**COMMON, "kind": kind.value, **MINIMAL[kind], **fields}


def parse(raw: Mapping[str, Any]) -> Interaction:
    return parse_interaction(raw, now=NOW, max_future_skew=SKEW)


def rejections_of(raw: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    with pytest.raises(InvalidInteraction) as caught:
        parse(raw)
    return [(r.code, r.field) for r in caught.value.rejections]


def drop(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in names}


# --- acceptance ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_a_minimal_payload_of_every_kind_is_accepted(kind: Kind) -> None:
    interaction = parse(wire(kind))
    assert interaction.kind is kind
    assert interaction.occurred_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert interaction.occurred_at.tzinfo is UTC
    assert (interaction.money is not None) == (kind in MONEY_REQUIRED)


@pytest.mark.parametrize("kind", list(Kind))
def test_a_full_payload_of_every_kind_is_accepted(kind: Kind) -> None:
    interaction = parse(wire(kind, **FULL[kind], attributes={"utm": {"source": "ads"}}))
    assert interaction.kind is kind
    assert interaction.personal is not None
    assert interaction.personal["attributes"] == {"utm": {"source": "ads"}}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_round_trips_through_its_wire_form(kind: Kind) -> None:
    interaction = parse(wire(kind, **FULL[kind], attributes={"a": [1, 2.5, None, True]}))
    again = parse(json.loads(json.dumps(interaction.to_wire())))
    assert again == interaction
    assert again.canonical() == interaction.canonical()


def test_a_purchase_becomes_money_and_non_personal_facts() -> None:
    interaction = parse(wire(Kind.PURCHASE, **FULL[Kind.PURCHASE]))
    assert interaction.money == Money(Decimal("129.90"), "EUR")
    assert interaction.facts == {"order_id": "O-1"}
    assert interaction.personal is None


def test_profile_fields_are_split_into_facts_and_personal_data() -> None:
    interaction = parse(wire(Kind.REGISTERED, **FULL[Kind.REGISTERED]))
    assert interaction.facts == {
        "profile": {
            "country": "GB",
            "language": "en-GB",
            "timezone": "Europe/London",
            "industry": "retail",
            "size": "11-50",
        }
    }
    assert interaction.personal == {
        "profile": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+442079460958"}
    }


def test_free_text_is_personal_and_short_codes_are_facts() -> None:
    interaction = parse(wire(Kind.SUBSCRIPTION_CANCELLED, **FULL[Kind.SUBSCRIPTION_CANCELLED]))
    assert interaction.facts == {"subscription_id": "S1", "plan": "pro", "reason": "too_expensive"}
    assert interaction.personal == {"comment": "Too pricey.\nSorry!"}


def test_null_for_an_optional_field_means_absent() -> None:
    explicit = parse(wire(Kind.PURCHASE, order_id=None, attributes=None))
    assert explicit == parse(wire(Kind.PURCHASE))


def test_personal_fields_are_listed_by_dotted_name() -> None:
    assert {"profile.email", "profile.name", "profile.phone", "attributes"} <= PERSONAL_FIELDS
    assert {"comment", "subject"} <= PERSONAL_FIELDS


def test_money_kinds_are_declared_consistently() -> None:
    assert {Kind.PURCHASE, Kind.REFUND} == MONEY_REQUIRED
    assert not MONEY_REQUIRED & MONEY_OPTIONAL
    assert all(kind.value == kind.name.lower() for kind in Kind)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01t10:00:00z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T05:30:00-04:30",
        "2024-05-01T10:00:00.000000000Z",
    ],
)
def test_the_same_instant_with_any_offset_gives_the_same_canonical_form(occurred_at: str) -> None:
    reference = parse(wire(Kind.PURCHASE, occurred_at="2024-05-01T10:00:00Z"))
    assert parse(wire(Kind.PURCHASE, occurred_at=occurred_at)).canonical() == (
        reference.canonical()
    )
    assert reference.canonical()["occurred_at"] == "2024-05-01T10:00:00.000000Z"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"amount": "10.5"}, {"amount": "10.50"}),
        ({"amount": "10.500"}, {"amount": "10.5"}),
        ({"amount": "0010.50"}, {"amount": "10.5"}),
        ({"order_id": None}, {}),
        ({"attributes": {"a": 1, "b": 2}}, {"attributes": {"b": 2, "a": 1}}),
    ],
)
def test_payloads_that_mean_the_same_have_equal_canonical_forms(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    assert parse(wire(Kind.PURCHASE, **first)).canonical() == (
        parse(wire(Kind.PURCHASE, **second)).canonical()
    )


def test_equivalent_profiles_have_equal_canonical_forms() -> None:
    spaced = {"phone": "+49 30 123-4567", "language": "PT-br"}
    tight = {"phone": "+49301234567", "language": "pt-BR"}
    assert parse(wire(Kind.PROFILE_UPDATED, profile=spaced)).canonical() == (
        parse(wire(Kind.PROFILE_UPDATED, profile=tight)).canonical()
    )


@pytest.mark.parametrize(
    ("change"),
    [
        {"amount": "10.51"},
        {"currency": "USD"},
        {"occurred_at": "2024-05-01T10:00:00.000001Z"},
        {"order_id": "O-2"},
        {"attributes": {"a": 1}},
    ],
)
def test_payloads_that_differ_in_meaning_have_different_canonical_forms(
    change: dict[str, Any],
) -> None:
    base = wire(Kind.PURCHASE, occurred_at="2024-05-01T10:00:00Z")
    assert parse(base).canonical() != parse({**base, **change}).canonical()


def test_canonical_form_is_json_serializable_without_help() -> None:
    interaction = parse(wire(Kind.REGISTERED, **FULL[Kind.REGISTERED], attributes={"x": [1]}))
    assert json.loads(json.dumps(interaction.canonical())) == interaction.canonical()


def test_a_mapping_that_is_not_a_dict_is_accepted() -> None:
    class Frozen(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Any:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert parse(Frozen(wire(Kind.LOGIN))).kind is Kind.LOGIN


def test_a_timestamp_at_the_edge_of_the_allowed_skew_is_accepted() -> None:
    edge = (NOW + SKEW).isoformat()
    assert parse(wire(Kind.LOGIN, occurred_at=edge)).occurred_at == NOW + SKEW


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_interaction(wire(Kind.LOGIN), now=datetime(2025, 1, 1), max_future_skew=SKEW)


# --- rejection: one case per code ------------------------------------------------------


REJECTED: list[tuple[str, dict[str, Any], str, str | None]] = [
    # (case, payload, code, field)
    ("missing event_id", drop(wire(Kind.LOGIN), "event_id"), "missing_field", "event_id"),
    ("missing kind", drop(wire(Kind.LOGIN), "kind"), "missing_field", "kind"),
    ("missing amount", drop(wire(Kind.PURCHASE), "amount"), "missing_field", "amount"),
    (
        "missing currency on refund",
        drop(wire(Kind.REFUND), "currency"),
        "missing_field",
        "currency",
    ),
    (
        "amount without currency",
        wire(Kind.SUBSCRIPTION_STARTED, amount="5"),
        "missing_field",
        "currency",
    ),
    (
        "currency without amount",
        wire(Kind.PAYMENT_FAILED, currency="EUR"),
        "missing_field",
        "amount",
    ),
    (
        "missing subscription_id",
        drop(wire(Kind.SUBSCRIPTION_RENEWED), "subscription_id"),
        "missing_field",
        "subscription_id",
    ),
    (
        "missing ticket_id",
        drop(wire(Kind.SUPPORT_TICKET_RESOLVED), "ticket_id"),
        "missing_field",
        "ticket_id",
    ),
    ("missing score", drop(wire(Kind.SURVEY_RESPONSE), "score"), "missing_field", "score"),
    (
        "missing profile on update",
        drop(wire(Kind.PROFILE_UPDATED), "profile"),
        "missing_field",
        "profile",
    ),
    ("unknown top-level field", wire(Kind.LOGIN, color="red"), "unknown_field", "color"),
    ("money on a login", wire(Kind.LOGIN, amount="1", currency="EUR"), "unknown_field", "amount"),
    ("field of another kind", wire(Kind.VISIT, ticket_id="T1"), "unknown_field", "ticket_id"),
    (
        "unknown profile field",
        wire(Kind.REGISTERED, profile={"age": 3}),
        "unknown_field",
        "profile.age",
    ),
    ("number as event_id", wire(Kind.LOGIN, event_id=17), "wrong_type", "event_id"),
    ("null as customer_id", wire(Kind.LOGIN, customer_id=None), "wrong_type", "customer_id"),
    ("number as amount", wire(Kind.PURCHASE, amount=10.5), "wrong_type", "amount"),
    ("integer as amount", wire(Kind.PURCHASE, amount=10), "wrong_type", "amount"),
    ("number as currency", wire(Kind.PURCHASE, currency=978), "wrong_type", "currency"),
    ("string as score", wire(Kind.SURVEY_RESPONSE, score="5"), "wrong_type", "score"),
    ("bool as score", wire(Kind.SURVEY_RESPONSE, score=True), "wrong_type", "score"),
    ("float as score", wire(Kind.SURVEY_RESPONSE, score=5.0), "wrong_type", "score"),
    (
        "string as satisfied",
        wire(Kind.SUPPORT_TICKET_RESOLVED, satisfied="yes"),
        "wrong_type",
        "satisfied",
    ),
    (
        "int as satisfied",
        wire(Kind.SUPPORT_TICKET_RESOLVED, satisfied=1),
        "wrong_type",
        "satisfied",
    ),
    ("list as profile", wire(Kind.REGISTERED, profile=["x"]), "wrong_type", "profile"),
    ("string as attributes", wire(Kind.LOGIN, attributes="x"), "wrong_type", "attributes"),
    (
        "number as occurred_at",
        wire(Kind.LOGIN, occurred_at=1714557600),
        "wrong_type",
        "occurred_at",
    ),
    ("number as kind", wire(Kind.LOGIN, kind=3), "wrong_type", "kind"),
    (
        "non-finite attribute",
        wire(Kind.LOGIN, attributes={"x": float("nan")}),
        "wrong_type",
        "attributes",
    ),
    ("empty event_id", wire(Kind.LOGIN, event_id=""), "empty", "event_id"),
    ("blank source", wire(Kind.LOGIN, source="   "), "empty", "source"),
    ("blank ticket_id", wire(Kind.SUPPORT_TICKET_OPENED, ticket_id="\u3000"), "empty", "ticket_id"),
    ("empty profile on update", wire(Kind.PROFILE_UPDATED, profile={}), "empty", "profile"),
    (
        "profile of nulls on update",
        wire(Kind.PROFILE_UPDATED, profile={"name": None}),
        "empty",
        "profile",
    ),
    ("long event_id", wire(Kind.LOGIN, event_id="e" * 129), "too_long", "event_id"),
    ("long source", wire(Kind.LOGIN, source="s" * 65), "too_long", "source"),
    ("long comment", wire(Kind.COMPLAINT, comment="c" * 2001), "too_long", "comment"),
    (
        "long profile name",
        wire(Kind.REGISTERED, profile={"name": "n" * 201}),
        "too_long",
        "profile.name",
    ),
    ("NUL in event_id", wire(Kind.LOGIN, event_id="e\x001"), "invalid_characters", "event_id"),
    (
        "newline in customer_id",
        wire(Kind.LOGIN, customer_id="c\n1"),
        "invalid_characters",
        "customer_id",
    ),
    ("DEL in source", wire(Kind.LOGIN, source="shop\x7f"), "invalid_characters", "source"),
    ("NUL in comment", wire(Kind.COMPLAINT, comment="bad\x00"), "invalid_characters", "comment"),
    (
        "bad priority",
        wire(Kind.SUPPORT_TICKET_OPENED, priority="critical"),
        "invalid_choice",
        "priority",
    ),
    ("bad severity", wire(Kind.COMPLAINT, severity="LOW"), "invalid_choice", "severity"),
    ("bad channel", wire(Kind.VISIT, channel="fax"), "invalid_choice", "channel"),
    ("unknown kind", wire(Kind.LOGIN, kind="logout"), "unknown_kind", "kind"),
    ("kind in upper case", wire(Kind.LOGIN, kind="LOGIN"), "unknown_kind", "kind"),
    ("date only", wire(Kind.LOGIN, occurred_at="2024-05-01"), "invalid_timestamp", "occurred_at"),
    ("not a date", wire(Kind.LOGIN, occurred_at="yesterday"), "invalid_timestamp", "occurred_at"),
    (
        "month 13",
        wire(Kind.LOGIN, occurred_at="2024-13-01T00:00:00Z"),
        "invalid_timestamp",
        "occurred_at",
    ),
    (
        "hour 24",
        wire(Kind.LOGIN, occurred_at="2024-05-01T24:00:00Z"),
        "invalid_timestamp",
        "occurred_at",
    ),
    (
        "basic format",
        wire(Kind.LOGIN, occurred_at="20240501T100000Z"),
        "invalid_timestamp",
        "occurred_at",
    ),
    (
        "no offset",
        wire(Kind.LOGIN, occurred_at="2024-05-01T10:00:00"),
        "missing_offset",
        "occurred_at",
    ),
    (
        "no offset with fraction",
        wire(Kind.LOGIN, occurred_at="2024-05-01T10:00:00.5"),
        "missing_offset",
        "occurred_at",
    ),
    (
        "too far in the future",
        wire(Kind.LOGIN, occurred_at="2025-01-01T12:05:00.000001Z"),
        "in_future",
        "occurred_at",
    ),
    (
        "before 1970",
        wire(Kind.LOGIN, occurred_at="1969-12-31T23:59:59Z"),
        "out_of_range",
        "occurred_at",
    ),
    (
        "1970 by offset only",
        wire(Kind.LOGIN, occurred_at="1970-01-01T00:30:00+01:00"),
        "out_of_range",
        "occurred_at",
    ),
    (
        "beyond year 9999 in UTC",
        wire(Kind.LOGIN, occurred_at="9999-12-31T23:00:00-05:00"),
        "out_of_range",
        "occurred_at",
    ),
    ("negative amount", wire(Kind.PURCHASE, amount="-1.00"), "invalid_amount", "amount"),
    ("amount with exponent", wire(Kind.PURCHASE, amount="1e2"), "invalid_amount", "amount"),
    (
        "amount finer than cents",
        wire(Kind.PURCHASE, amount="10.005", currency="USD"),
        "invalid_amount",
        "amount",
    ),
    ("fractional yen", wire(Kind.REFUND, amount="5.5", currency="JPY"), "invalid_amount", "amount"),
    ("lower-case currency", wire(Kind.PURCHASE, currency="eur"), "invalid_currency", "currency"),
    ("unknown currency", wire(Kind.PURCHASE, currency="EUX"), "invalid_currency", "currency"),
    ("score above 10", wire(Kind.SURVEY_RESPONSE, score=11), "invalid_score", "score"),
    ("negative score", wire(Kind.SURVEY_RESPONSE, score=-1), "invalid_score", "score"),
    (
        "email without at",
        wire(Kind.REGISTERED, profile={"email": "ada.example.com"}),
        "invalid_email",
        "profile.email",
    ),
    (
        "email without tld",
        wire(Kind.REGISTERED, profile={"email": "ada@localhost"}),
        "invalid_email",
        "profile.email",
    ),
    (
        "email with space",
        wire(Kind.REGISTERED, profile={"email": "a da@example.com"}),
        "invalid_email",
        "profile.email",
    ),
    (
        "phone without plus",
        wire(Kind.REGISTERED, profile={"phone": "030 1234567"}),
        "invalid_phone",
        "profile.phone",
    ),
    (
        "phone too short",
        wire(Kind.REGISTERED, profile={"phone": "+49 123"}),
        "invalid_phone",
        "profile.phone",
    ),
    (
        "phone with letters",
        wire(Kind.REGISTERED, profile={"phone": "+49 30 CALLME"}),
        "invalid_phone",
        "profile.phone",
    ),
    (
        "lower-case country",
        wire(Kind.REGISTERED, profile={"country": "de"}),
        "invalid_country",
        "profile.country",
    ),
    (
        "unassigned country",
        wire(Kind.REGISTERED, profile={"country": "ZZ"}),
        "invalid_country",
        "profile.country",
    ),
    (
        "alpha-3 country",
        wire(Kind.REGISTERED, profile={"country": "DEU"}),
        "invalid_country",
        "profile.country",
    ),
    (
        "language name",
        wire(Kind.REGISTERED, profile={"language": "English"}),
        "invalid_language",
        "profile.language",
    ),
    (
        "language with underscore",
        wire(Kind.REGISTERED, profile={"language": "pt_BR"}),
        "invalid_language",
        "profile.language",
    ),
    (
        "unknown timezone",
        wire(Kind.REGISTERED, profile={"timezone": "Mars/Olympus"}),
        "invalid_timezone",
        "profile.timezone",
    ),
    (
        "path as timezone",
        wire(Kind.REGISTERED, profile={"timezone": "../../etc/passwd"}),
        "invalid_timezone",
        "profile.timezone",
    ),
    (
        "huge attributes",
        wire(Kind.LOGIN, attributes={"x": "y" * 8200}),
        "attributes_too_large",
        "attributes",
    ),
    (
        "long attribute key",
        wire(Kind.LOGIN, attributes={"k" * 65: 1}),
        "attributes_too_large",
        "attributes",
    ),
    (
        "deep attributes",
        wire(Kind.LOGIN, attributes={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
        "too_deep",
        "attributes",
    ),
    (
        "deep attribute lists",
        wire(Kind.LOGIN, attributes={"a": [[[[[1]]]]]}),
        "too_deep",
        "attributes",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [pytest.param(payload, code, field, id=case) for case, payload, code, field in REJECTED],
)
def test_a_broken_rule_is_rejected_with_its_code_and_field(
    payload: dict[str, Any], code: str, field: str | None
) -> None:
    assert (code, field) in rejections_of(payload)


def test_every_field_level_code_is_exercised() -> None:
    wire_level = {Code.MALFORMED_JSON, Code.INVALID_UTF8, Code.OVERSIZE, Code.INVALID_VALUE}
    store_level = {Code.CONFLICTING_DUPLICATE, Code.CUSTOMER_FORGOTTEN}
    exercised = {code for _, _, code, _ in REJECTED} | {Code.NOT_AN_OBJECT}
    assert set(Code) - wire_level - store_level <= exercised


@pytest.mark.parametrize("raw", [[], "purchase", 42, None])
def test_a_payload_that_is_not_an_object_is_rejected_as_a_whole(raw: Any) -> None:
    assert rejections_of(raw) == [("not_an_object", None)]


def test_attributes_at_the_size_and_depth_limits_are_accepted() -> None:
    deep = {"a": {"b": {"c": {"d": 1}}}}  # attributes is level 1, so this is level 4
    deepest = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    padding = 8 * 1024 - len(json.dumps({"x": ""}, separators=(",", ":")))
    for attributes in (deep, deepest, {"x": "y" * padding}, {"k" * 64: 1}):
        assert parse(wire(Kind.LOGIN, attributes=attributes)).personal == {"attributes": attributes}


def test_several_problems_are_all_reported_at_once() -> None:
    payload = {
        **wire(Kind.PURCHASE),
        "event_id": "",
        "customer_id": "c\x00",
        "occurred_at": "2024-05-01T10:00:00",
        "amount": 10.5,
        "currency": "eur",
        "coupon": "X",
    }
    assert rejections_of(payload) == [
        ("empty", "event_id"),
        ("invalid_characters", "customer_id"),
        ("missing_offset", "occurred_at"),
        ("wrong_type", "amount"),
        ("invalid_currency", "currency"),
        ("unknown_field", "coupon"),
    ]


def test_common_fields_are_still_checked_when_the_kind_is_unknown() -> None:
    payload = {**COMMON, "kind": "teleported", "source": "", "occurred_at": "soon"}
    assert rejections_of(payload) == [
        ("unknown_kind", "kind"),
        ("empty", "source"),
        ("invalid_timestamp", "occurred_at"),
    ]


def test_several_problems_inside_the_profile_are_all_reported() -> None:
    payload = wire(
        Kind.REGISTERED,
        profile={"email": "x", "phone": "1", "country": "de", "language": "?", "shoe": 44},
    )
    assert rejections_of(payload) == [
        ("invalid_email", "profile.email"),
        ("invalid_phone", "profile.phone"),
        ("invalid_country", "profile.country"),
        ("invalid_language", "profile.language"),
        ("unknown_field", "profile.shoe"),
    ]


def test_rejections_have_a_message_and_the_shared_dict_shape() -> None:
    with pytest.raises(InvalidInteraction) as caught:
        parse(wire(Kind.PURCHASE, amount=10.5))
    rejection = caught.value.first
    assert rejection.as_dict() == {
        "code": "wrong_type",
        "field": "amount",
        "message": rejection.message,
    }
    assert "decimal" in rejection.message
    assert str(caught.value).startswith("wrong_type amount: ")


def test_rejection_messages_do_not_echo_the_rejected_value() -> None:
    secret = "not-an-email-but-personal"
    with pytest.raises(InvalidInteraction) as caught:
        parse(wire(Kind.REGISTERED, profile={"email": secret, "name": 7}))
    assert secret not in str(caught.value)


def test_an_invalid_interaction_needs_at_least_one_rejection() -> None:
    with pytest.raises(ValueError, match="at least one"):
        InvalidInteraction([])
    assert InvalidInteraction([Rejection("empty", None, "x")]).first.field is None


def test_the_codes_are_stable_snake_case_strings() -> None:
    assert all(code.value == code.name.lower() for code in Code)
    assert Code.CONFLICTING_DUPLICATE.value == "conflicting_duplicate"


# --- the published schema --------------------------------------------------------------


def test_the_schema_declares_draft_2020_12_and_lists_every_kind() -> None:
    schema = interaction_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == {kind.value for kind in Kind}
    assert len(schema["oneOf"]) == len(Kind)
    json.dumps(schema)  # serializable as published


def kind_schema(kind: Kind) -> dict[str, Any]:
    schema = interaction_json_schema()
    ref: str = schema["discriminator"]["mapping"][kind.value]
    definition: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return definition


@pytest.mark.parametrize("kind", list(Kind))
def test_a_valid_example_fits_the_schema_of_its_kind(kind: Kind) -> None:
    definition = kind_schema(kind)
    example = wire(kind, **FULL[kind])
    assert definition["additionalProperties"] is False
    assert set(definition["required"]) <= set(wire(kind))
    assert set(example) <= set(definition["properties"])
    assert definition["properties"]["kind"]["const"] == kind.value


@pytest.mark.parametrize(
    ("kind", "required"),
    [
        (Kind.PURCHASE, {"amount", "currency"}),
        (Kind.SURVEY_RESPONSE, {"score"}),
        (Kind.PROFILE_UPDATED, {"profile"}),
        (Kind.SUPPORT_TICKET_OPENED, {"ticket_id"}),
        (Kind.SUBSCRIPTION_CANCELLED, {"subscription_id"}),
    ],
)
def test_the_schema_shows_per_kind_requirements(kind: Kind, required: set[str]) -> None:
    assert required <= set(kind_schema(kind)["required"])


def test_the_schema_marks_personal_fields() -> None:
    schema = interaction_json_schema()
    profile = schema["$defs"]["Profile"]["properties"]
    marked = {f"profile.{name}" for name, prop in profile.items() if prop.get("x-personal")}
    for definition in schema["$defs"].values():
        if definition is not schema["$defs"]["Profile"]:
            marked |= {n for n, p in definition["properties"].items() if p.get("x-personal")}
    assert marked == PERSONAL_FIELDS


def test_the_schema_describes_amount_as_a_string() -> None:
    amount = kind_schema(Kind.PURCHASE)["properties"]["amount"]
    assert amount["type"] == "string"
    assert "EUR" in kind_schema(Kind.PURCHASE)["properties"]["currency"]["enum"]


# --- properties ----------------------------------------------------------------------------

ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=128
).filter(lambda s: not s.isspace())


@given(
    event_id=ids,
    customer_id=ids,
    cents=st.integers(min_value=0, max_value=10**12),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_any_valid_purchase_round_trips_and_ignores_offset_spelling(
    event_id: str, customer_id: str, cents: int, offset_minutes: int
) -> None:
    instant = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    payload = wire(
        Kind.PURCHASE,
        event_id=event_id,
        customer_id=customer_id,
        amount=format(Decimal(cents).scaleb(-2), "f"),
        occurred_at=local.isoformat(),
    )
    interaction = parse(payload)
    assert parse(interaction.to_wire()) == interaction
    assert interaction.occurred_at == instant
    assert interaction.money is not None
    assert interaction.money.minor_units() == cents


# --- fast path and reference path agree ---------------------------------------------------
#
# parse_interaction tries domain.interactions._parse_fast first, which may only accept;
# whenever it steps aside (None), the pydantic models (_parse_full) judge and report.

from domain import interactions as _contract  # noqa: E402


class _Text(str):
    pass


FAST_CASES: list[tuple[str, dict[str, Any]]] = [
    *[(f"minimal {kind.value}", wire(kind)) for kind in Kind],
    *[
        (f"full {kind.value}", wire(kind, **FULL[kind], attributes={"a": [1, 2.5, None, True]}))
        for kind in Kind
    ],
    ("nulls for optionals", wire(Kind.PURCHASE, order_id=None, attributes=None)),
    ("lower-case t and z", wire(Kind.LOGIN, occurred_at="2024-05-01t10:00:00z")),
    ("nanoseconds", wire(Kind.LOGIN, occurred_at="2024-05-01T10:00:00.123456789Z")),
    ("edge of skew", wire(Kind.LOGIN, occurred_at=(NOW + SKEW).isoformat())),
    ("the epoch", wire(Kind.LOGIN, occurred_at="1970-01-01T00:00:00Z")),
    ("unicode id", wire(Kind.LOGIN, event_id="évt\u00a0№1", customer_id="客户")),
    ("yen", wire(Kind.REFUND, amount="0005.000", currency="JPY")),
    ("bhd", wire(Kind.PAYMENT_FAILED, amount="1.5", currency="BHD")),
    ("survey bounds", wire(Kind.SURVEY_RESPONSE, score=10)),
    ("text with tabs", wire(Kind.COMPLAINT, comment="a\tb\r\nc")),
    ("profile order", wire(Kind.REGISTERED, profile={"size": "1", "phone": "+1 555 0100 99"})),
    ("limits", wire(Kind.LOGIN, event_id="e" * 128, source="s" * 64, page="/" * 512)),
]


@pytest.mark.parametrize(
    "payload", [pytest.param(payload, id=case) for case, payload in FAST_CASES]
)
def test_the_fast_path_accepts_valid_payloads_exactly_like_the_models(
    payload: dict[str, Any],
) -> None:
    not_after = NOW + SKEW
    fast = _contract._parse_fast(payload, not_after)
    full = _contract._parse_full(payload, not_after)
    assert fast is not None
    assert fast == full
    assert list(fast.facts) == list(full.facts)
    assert list(fast.personal or {}) == list(full.personal or {})
    assert json.dumps(fast.canonical()) == json.dumps(full.canonical())
    assert type(fast.occurred_at) is datetime
    assert fast.occurred_at.tzinfo is UTC


STEP_ASIDE: list[tuple[str, dict[str, Any]]] = [
    *[(case, payload) for case, payload, _, _ in REJECTED],
    ("surrogate in id", wire(Kind.LOGIN, event_id="a\ud800")),
    ("surrogate in page", wire(Kind.LOGIN, page="/\udfff")),
    ("surrogate in comment", wire(Kind.COMPLAINT, comment="x\ud800")),
    ("surrogate in email", wire(Kind.REGISTERED, profile={"email": "a\ud800@example.com"})),
    ("str subclass id", wire(Kind.LOGIN, event_id=_Text("e1"))),
    ("str subclass amount", wire(Kind.PURCHASE, amount=_Text("1.00"))),
    ("enum as kind", {**wire(Kind.LOGIN), "kind": Kind.LOGIN}),
    ("empty profile on registered", wire(Kind.REGISTERED, profile={})),
    ("profile of nulls on registered", wire(Kind.REGISTERED, profile={"name": None})),
    ("non-string attribute key", wire(Kind.LOGIN, attributes={1: "x"})),
    ("several problems", {**wire(Kind.PURCHASE), "event_id": "", "currency": "eur", "x": 1}),
    ("bad kind and fields", {**COMMON, "kind": "teleported", "source": ""}),
    ("offset with seconds", wire(Kind.LOGIN, occurred_at="2024-05-01T10:00:00+02:00:30")),
    ("space separator", wire(Kind.LOGIN, occurred_at="2024-05-01 10:00:00Z")),
    ("no seconds", wire(Kind.LOGIN, occurred_at="2024-05-01T10:00Z")),
    ("compact offset", wire(Kind.LOGIN, occurred_at="2024-05-01T10:00:00+0200")),
    ("bool as score", wire(Kind.SURVEY_RESPONSE, score=False)),
]


@pytest.mark.parametrize(
    "payload", [pytest.param(payload, id=case) for case, payload in STEP_ASIDE]
)
def test_the_fast_path_steps_aside_and_the_models_judge(payload: dict[str, Any]) -> None:
    not_after = NOW + SKEW
    assert _contract._parse_fast(payload, not_after) is None
    try:
        expected: Any = _contract._parse_full(payload, not_after)
    except InvalidInteraction as exc:
        expected = exc.rejections
    try:
        got: Any = parse(payload)
    except InvalidInteraction as exc:
        got = exc.rejections
    assert got == expected


def test_every_kind_has_a_fast_path() -> None:
    assert set(_contract._FAST_KINDS) == {kind.value for kind in Kind}
    assert _contract._envelope_in_step()


def test_a_dict_subclass_goes_through_the_models() -> None:
    class Payload(dict[str, Any]):
        pass

    payload = Payload(wire(Kind.LOGIN))
    assert _contract._parse_fast(payload, NOW + SKEW) is None
    assert parse(payload) == parse(wire(Kind.LOGIN))
