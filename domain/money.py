"""Exact money: a decimal amount tied to an ISO 4217 currency.

Floats cannot represent most decimal prices, and adding amounts of different
currencies has no meaning, so both are refused outright rather than tolerated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from domain.currencies import MINOR_UNITS
from domain.errors import Code, CurrencyMismatch, InvalidMoney

__all__ = [
    "MAX_INTEGER_DIGITS",
    "CurrencyMismatch",
    "InvalidMoney",
    "Money",
    "check_amount",
    "check_currency",
]

MAX_INTEGER_DIGITS = 18
"""Bounds wire amounts so every downstream column and ledger holds them exactly."""

# Plain decimal, non-negative, no exponent, no sign, no surrounding space:
# "10", "10.5", "0.50"; not "1e3", "+1", ".5", "5.", " 5", "1_000".
_PLAIN_DECIMAL = re.compile(rf"([0-9]{{1,{MAX_INTEGER_DIGITS}}})(?:\.([0-9]+))?")


def check_currency(currency: str) -> int:
    """Return the minor-unit digits of an active ISO 4217 code, else raise InvalidMoney."""
    digits = MINOR_UNITS.get(currency)
    if digits is None:
        raise InvalidMoney(
            Code.INVALID_CURRENCY,
            "must be an ISO 4217 currency code in upper case, such as EUR",
        )
    return digits


def check_amount(text: str) -> re.Match[str]:
    """Check the wire syntax of an amount without knowing its currency yet.

    Split from :meth:`Money.parse` so validation can report a malformed amount even
    when the currency is broken too.
    """
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        if text.startswith("-"):
            message = "amount must not be negative"
        elif re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            message = f"amount has more than {MAX_INTEGER_DIGITS} integer digits"
        else:
            message = 'amount must be a plain decimal string such as "10.50"'
        raise InvalidMoney(Code.INVALID_AMOUNT, message)
    return match


def _scale_error(currency: str, digits: int) -> InvalidMoney:
    return InvalidMoney(
        Code.INVALID_AMOUNT, f"{currency} allows at most {digits} digits after the decimal point"
    )


def _fixed(text: str, currency: str, digits: int) -> str:
    """Rewrite a plain decimal string with exactly ``digits`` fraction digits.

    Works on the text, not on Decimal arithmetic: exact whatever the Decimal
    context, and cheap enough for the bulk-import hot path.
    """
    integer, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > digits:
        raise _scale_error(currency, digits)
    return f"{integer}.{fraction.ljust(digits, '0')}" if digits else integer


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency.

    Construction accepts any finite ``Decimal`` (intermediate results may carry more
    precision than the currency's minor unit); :meth:`parse` is the strict wire
    entry point. Equality is numeric: ``10.5 EUR == 10.50 EUR``.
    """

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        value: object = self.amount
        if not isinstance(value, Decimal):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"Money amount must be Decimal or int, not {type(value).__name__}"
                    " (floats cannot hold exact decimal amounts)"
                )
            value = Decimal(value)
            object.__setattr__(self, "amount", value)
        if not value.is_finite():
            raise InvalidMoney(Code.INVALID_AMOUNT, "amount must be finite")
        if value.is_signed() and value.is_zero():
            object.__setattr__(self, "amount", abs(value))  # one zero: no "-0.00" on the wire
        if self.currency not in MINOR_UNITS:
            check_currency(self.currency)

    @classmethod
    def parse(cls, amount: str, currency: str) -> Money:
        """Build Money from its wire strings, enforcing every contract rule.

        The amount is fixed to the currency's minor unit so that equivalent
        spellings ("10.5", "10.50", "10.500" USD) give identical values and wire forms.
        """
        digits = MINOR_UNITS.get(currency)
        if digits is None:
            digits = check_currency(currency)  # raises InvalidMoney
        match = _PLAIN_DECIMAL.fullmatch(amount)
        if match is None:
            match = check_amount(amount)  # raises InvalidMoney with the precise message
        integer, fraction = match.groups()
        if fraction:
            fraction = fraction.rstrip("0")
            if len(fraction) > digits:
                raise _scale_error(currency, digits)
        if cls is not Money:  # pragma: no cover - subclasses keep their own __post_init__
            return cls(Decimal(_fixed(amount, currency, digits)), currency)
        # The text is a plain non-negative decimal and the currency is known, so every
        # check of __post_init__ holds already: build without running them again.
        money = _new(Money)
        _set_amount(
            money,
            Decimal(f"{integer}.{(fraction or '').ljust(digits, '0')}" if digits else integer),
        )
        _set_currency(money, currency)
        return money

    @classmethod
    def zero(cls, currency: str) -> Money:
        """The neutral element for sums in ``currency``."""
        return cls.parse("0", currency)

    def minor_units(self) -> int:
        """The amount as an integer count of minor units (cents), for ledgers.

        Raises InvalidMoney if the amount is finer than the currency's minor unit:
        silently rounding money is never acceptable.
        """
        digits = MINOR_UNITS[self.currency]
        return int(_fixed(format(self.amount, "f"), self.currency, digits).replace(".", ""))

    def to_wire(self) -> str:
        """The amount as a plain decimal string, with the minor-unit digits if exact.

        An amount finer than the minor unit (possible only from arithmetic, never
        from the wire) keeps its significant digits rather than being rounded.
        """
        text = format(self.amount, "f")
        digits = MINOR_UNITS[self.currency]
        try:
            return _fixed(text, self.currency, digits)
        except InvalidMoney:
            return text.rstrip("0")

    def _same_currency(self, other: Money, operation: str) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(f"cannot {operation} {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount >= other.amount

    def __str__(self) -> str:
        return f"{self.to_wire()} {self.currency}"


_new = object.__new__
# Slot descriptors write a frozen instance's fields directly (what the generated
# __init__ does, minus the call overhead); used only by Money.parse.
_set_amount = Money.__dict__["amount"].__set__
_set_currency = Money.__dict__["currency"].__set__
