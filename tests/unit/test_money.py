"""Money: exact amounts, one currency at a time, the wire rules of the contract."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.currencies import MINOR_UNITS
from domain.errors import Code, CurrencyMismatch, EventcrmError, InvalidMoney
from domain.money import Money


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


@pytest.mark.parametrize(
    ("amount", "currency", "wire", "minor"),
    [
        ("10.50", "USD", "10.50", 1050),
        ("10.5", "USD", "10.50", 1050),
        ("10.500", "USD", "10.50", 1050),
        ("10", "USD", "10.00", 1000),
        ("0", "EUR", "0.00", 0),
        ("007.10", "EUR", "7.10", 710),
        ("5", "JPY", "5", 5),
        ("5.0", "JPY", "5", 5),
        ("1.234", "BHD", "1.234", 1234),
        ("0.0001", "CLF", "0.0001", 1),
        ("999999999999999999.99", "EUR", "999999999999999999.99", 99999999999999999999),
    ],
)
def test_parse_accepts_plain_decimals_within_the_currency_minor_unit(
    amount: str, currency: str, wire: str, minor: int
) -> None:
    money = Money.parse(amount, currency)
    assert money.to_wire() == wire
    assert money.minor_units() == minor
    assert money.currency == currency


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        ("10.005", "USD", Code.INVALID_AMOUNT),
        ("5.5", "JPY", Code.INVALID_AMOUNT),
        ("1.2345", "BHD", Code.INVALID_AMOUNT),
        ("-1", "USD", Code.INVALID_AMOUNT),
        ("-0", "USD", Code.INVALID_AMOUNT),
        ("+1", "USD", Code.INVALID_AMOUNT),
        ("1e3", "USD", Code.INVALID_AMOUNT),
        ("NaN", "USD", Code.INVALID_AMOUNT),
        ("Infinity", "USD", Code.INVALID_AMOUNT),
        (".5", "USD", Code.INVALID_AMOUNT),
        ("5.", "USD", Code.INVALID_AMOUNT),
        (" 5", "USD", Code.INVALID_AMOUNT),
        ("1_000", "USD", Code.INVALID_AMOUNT),
        ("1,5", "EUR", Code.INVALID_AMOUNT),
        ("", "EUR", Code.INVALID_AMOUNT),
        ("\u0663", "EUR", Code.INVALID_AMOUNT),  # Arabic-Indic digit three
        ("1234567890123456789", "EUR", Code.INVALID_AMOUNT),
        ("10", "usd", Code.INVALID_CURRENCY),
        ("10", "XXX", Code.INVALID_CURRENCY),
        ("10", "XAU", Code.INVALID_CURRENCY),
        ("10", "EURO", Code.INVALID_CURRENCY),
        ("10", "", Code.INVALID_CURRENCY),
    ],
)
def test_parse_rejects_what_the_contract_forbids_with_a_code(
    amount: str, currency: str, code: Code
) -> None:
    with pytest.raises(InvalidMoney) as caught:
        Money.parse(amount, currency)
    assert caught.value.code == code
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, EventcrmError)


def test_constructing_from_a_float_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="float"):
        Money(1.5, "EUR")  # type: ignore[arg-type]


def test_constructing_from_an_int_gives_a_decimal_amount() -> None:
    money = Money(12, "EUR")  # type: ignore[arg-type]
    assert money.amount == Decimal(12)
    assert isinstance(money.amount, Decimal)


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_constructing_from_a_non_finite_decimal_is_invalid_money(amount: Decimal) -> None:
    with pytest.raises(InvalidMoney):
        Money(amount, "EUR")


def test_constructing_with_an_unknown_currency_is_invalid_money() -> None:
    with pytest.raises(InvalidMoney) as caught:
        Money(Decimal(1), "ABC")
    assert caught.value.code == Code.INVALID_CURRENCY


def test_arithmetic_within_one_currency_is_exact() -> None:
    assert eur("0.10") + eur("0.20") == eur("0.30")
    assert eur("10.00") - eur("2.50") == eur("7.50")
    assert -eur("2.50") == Money(Decimal("-2.50"), "EUR")
    assert eur("0") == Money.zero("EUR")


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_mixing_currencies_raises_currency_mismatch(operation: object) -> None:
    assert callable(operation)
    with pytest.raises(CurrencyMismatch):
        operation(eur("1"), Money.parse("1", "USD"))


def test_different_currencies_are_never_equal() -> None:
    assert eur("1") != Money.parse("1", "USD")


def test_comparison_orders_amounts_within_a_currency() -> None:
    assert eur("1.50") < eur("2")
    assert eur("2") >= eur("2.00")
    assert max(eur("3"), eur("10"), eur("7")) == eur("10")


def test_equal_amounts_hash_alike_whatever_their_spelling() -> None:
    assert hash(Money(Decimal("10.5"), "EUR")) == hash(eur("10.50"))


def test_string_form_names_the_currency() -> None:
    assert str(eur("12.5")) == "12.50 EUR"
    assert str(Money.parse("1200", "JPY")) == "1200 JPY"


def test_negated_zero_is_plain_zero_on_the_wire() -> None:
    assert (-Money.zero("EUR")).to_wire() == "0.00"


def test_wire_form_never_uses_an_exponent() -> None:
    assert Money(Decimal("1E+3"), "USD").to_wire() == "1000.00"
    assert Money(Decimal("1E-2"), "USD").to_wire() == "0.01"


def test_amount_finer_than_the_minor_unit_is_kept_on_the_wire_but_refused_in_cents() -> None:
    money = Money(Decimal("1.005"), "USD")
    assert money.to_wire() == "1.005"
    with pytest.raises(InvalidMoney):
        money.minor_units()


def test_every_currency_has_a_plausible_minor_unit() -> None:
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) <= {0, 2, 3, 4}


cents = st.integers(min_value=-(10**15), max_value=10**15)
currencies = st.sampled_from(["EUR", "JPY", "BHD", "CLF"])


def money_of(units: int, currency: str) -> Money:
    return Money(Decimal(units).scaleb(-MINOR_UNITS[currency]), currency)


@given(cents, cents, currencies)
def test_adding_then_subtracting_gives_back_the_original(a: int, b: int, currency: str) -> None:
    x, y = money_of(a, currency), money_of(b, currency)
    assert (x + y) - y == x
    assert x + y == y + x
    assert x - x == Money.zero(currency)


@given(cents, cents, currencies)
def test_arithmetic_agrees_with_integer_minor_units(a: int, b: int, currency: str) -> None:
    x, y = money_of(a, currency), money_of(b, currency)
    assert (x + y).minor_units() == a + b
    assert (x - y).minor_units() == a - b
    assert (x < y) == (a < b)


@given(st.integers(min_value=0, max_value=10**18 - 1), currencies)
def test_wire_form_parses_back_to_the_same_money(units: int, currency: str) -> None:
    money = money_of(units, currency)
    assert Money.parse(money.to_wire(), currency) == money
    assert Money.parse(money.to_wire(), currency).to_wire() == money.to_wire()


@pytest.mark.parametrize(
    ("amount", "currency", "wire"),
    [
        ("10", "EUR", "10.00"),
        ("10.5", "EUR", "10.50"),
        ("0010.500", "USD", "10.50"),
        ("0", "JPY", "0"),
        ("5.000", "JPY", "5"),
        ("1.5", "BHD", "1.500"),
        ("0.00", "EUR", "0.00"),
        ("9" * 18, "EUR", "9" * 18 + ".00"),
    ],
)
def test_parse_builds_the_same_money_as_the_constructor(
    amount: str, currency: str, wire: str
) -> None:
    parsed = Money.parse(amount, currency)
    assert parsed == Money(Decimal(wire), currency)
    assert parsed.to_wire() == wire
    assert str(parsed.amount) == wire
    assert type(parsed.amount) is Decimal
    assert not parsed.amount.is_signed()


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1", "eur", "ISO 4217"),
        ("-1", "XXX", "ISO 4217"),  # the currency is judged first
        ("-1", "EUR", "negative"),
        ("1" * 19, "EUR", "integer digits"),
        ("1e3", "EUR", "plain decimal"),
        ("10.005", "USD", "USD allows at most 2 digits"),
        ("5.5", "JPY", "JPY allows at most 0 digits"),
    ],
)
def test_parse_refuses_with_the_precise_message(amount: str, currency: str, message: str) -> None:
    with pytest.raises(InvalidMoney, match=message):
        Money.parse(amount, currency)
