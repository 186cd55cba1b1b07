"""One customer's fold state: every running statistic, cache and projected value.

The state is a mutable object owned by its caller: the fold updates it in place (copying
a growing log per event would make folding quadratic); :meth:`CustomerState.copy` keeps
an older version. It pickles.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Final

from projections.cadence import allowances_of, cadence_of
from projections.model import InputEvent, Reason
from projections.policy import Policy
from projections.vocabulary import AlertState, Severity, Stage, Tier

FAR: Final = 1 << 62
"""No deadline: later than any representable instant."""

_LOG_SLOTS: Final = frozenset({"events", "keys"})
_EVENT_ONLY_SLOTS: Final = frozenset({"seen", "orders"})
"""Containers only folding an event changes (`projections.facts.record`, refunds)."""
_KINDS: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = []


def _slot_kinds(
    state: CustomerState,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(slots copied by reference, containers copied, event-log lists), classified once
    by the values' types (each slot's type is fixed by ``__init__``), so a copy does no
    per-slot type tests."""
    if not _KINDS:
        names = STATE_SLOTS
        values = [getattr(state, name) for name in names]
        containers = tuple(
            n
            for n, v in zip(names, values, strict=True)
            if isinstance(v, deque | dict | set | list) and n not in _LOG_SLOTS
        )
        logs = tuple(n for n in names if n in _LOG_SLOTS)
        plain = tuple(n for n in names if n not in containers and n not in logs)
        _KINDS.append((plain, containers, logs))
    return _KINDS[0]


STATE_SLOTS: Final = (
    "alert_armed",
    "alert_id",
    "alert_open",
    "alert_reasons",
    "alert_seq",
    "alert_severity",
    "alert_since",
    "alert_status",
    "allowance",
    "below_since",
    "calm_until",
    "cancel_id",
    "cancel_risk",
    "cancel_until",
    "clock",
    "complaint_units",
    "complaints",
    "cross_at",
    "cross_target",
    "customer_id",
    "emit",
    "events",
    "ever_subscribed",
    "first_commerce_us",
    "first_purchase_us",
    "fx_excluded",
    "fx_fallbacks",
    "interval",
    "keys",
    "last_commerce_id",
    "last_commerce_us",
    "last_purchase_id",
    "last_purchase_us",
    "mark",
    "orders",
    "payments",
    "policy",
    "prior",
    "prior_sum",
    "purchase_count",
    "purchase_day",
    "purchase_days",
    "react_base",
    "recent",
    "recent_sum",
    "renewal_count",
    "seen",
    "snooze_until",
    "stage",
    "stage_entries",
    "stage_reasons",
    "stage_since",
    "stage_us",
    "static_base",
    "subs",
    "survey",
    "ticket_dues",
    "tickets",
    "tier",
    "tier_reasons",
    "tier_since",
    "trend",
    "wake",
    "wake_fixed",
    "win",
    "win_purchases",
    "win_revenue",
)
"""Every attribute of a `CustomerState` (read by copies; a compiled build cannot read
``__slots__`` through the class)."""


class CustomerState:
    """Everything the fold needs for one customer; mutable, owned by one caller."""

    __slots__ = STATE_SLOTS

    def __init__(self, customer_id: str, policy: Policy) -> None:  # noqa: PLR0915 -- one assignment per field, grouped by projection
        self.customer_id = customer_id
        self.policy = policy
        self.clock: int | None = None
        self.emit = True
        """Build the changes (False while folding for nobody: fold, a late refold)."""
        self.events: list[InputEvent] = []
        self.keys: list[tuple[int, str]] = []
        self.seen: set[str] = set()
        self.mark: CustomerState | None = None
        """The state as of its last event, kept when `advance` moves the clock past it
        (a copy sharing the event log). An event after the last one but before the
        clock — the live case: a timer advanced the customer to "now", then an event
        stamped a little earlier arrives — refolds from here, not from the first event."""
        self.wake = FAR
        self.wake_fixed = FAR
        """The earliest planned instant from the sources that are not windows (tickets,
        subscriptions, grace, stage, snooze), as of the last full evaluation."""
        self.cross_target: int | None = None
        self.calm_until = 0
        """The score crossing is solved up to here (cache, reset by every evaluation)."""
        self.cross_at = FAR
        """The solved crossing instant (FAR: none up to ``calm_until``)."""
        # purchases and cadence
        self.purchase_count = 0
        self.purchase_days = 0
        """Distinct UTC days with a purchase: the frequency (a basket split into three
        orders is one visit, not three)."""
        self.purchase_day = -1
        self.first_purchase_us = 0
        self.first_commerce_us: int | None = None
        self.last_purchase_us = 0
        self.last_purchase_id = ""
        self.renewal_count = 0
        self.last_commerce_us: int | None = None
        self.last_commerce_id = ""
        self.ever_subscribed = False
        self.subs: dict[str, int] = {}
        self.cancel_risk = False
        self.interval = (0, 1)
        """Cached :func:`projections.cadence.cadence_of` (see :meth:`refresh_cadence`)."""
        self.allowance = (0, 0)
        """Cached :func:`projections.cadence.allowances_of`: (at risk after, churned after)
        in microseconds."""
        self.refresh_cadence()
        # windows: (expiry_us, ...) in time order
        self.win: deque[tuple[int, Decimal, int, str, str]] = deque()
        """(expiry, base amount, purchases, event id, order key) of the tier window."""
        self.orders: dict[str, tuple[int, Decimal, str | None, Decimal | None, bool]] = {}
        """Money events by order key: (at, base amount not yet refunded, currency, rate
        used, is a purchase). Refunds net against them at their own rate."""
        self.win_revenue = Decimal(0)
        self.win_purchases = 0
        self.fx_excluded: dict[str, int] = {}
        self.fx_fallbacks = 0
        self.recent: deque[tuple[int, Decimal]] = deque()
        self.recent_sum = Decimal(0)
        self.prior: deque[tuple[int, Decimal]] = deque()
        self.prior_sum = Decimal(0)
        self.complaints: deque[tuple[int, int, str]] = deque()
        self.complaint_units = 0
        self.payments: deque[tuple[int, str]] = deque()
        self.survey: tuple[int, int, str] | None = None
        self.cancel_until: int | None = None
        self.cancel_id = ""
        self.tickets: dict[str, tuple[int, str, str]] = {}
        self.ticket_dues: list[int] = []
        """The SLA instants of ``tickets``, sorted (breaches counted by bisection)."""
        self.trend = -1
        """Cached spend drop (fixed point; -1: to compute); reset when either sum moves."""
        self.static_base: int | None = None
        """Cached log-odds of the churn signals constant between deadlines (None: to
        compute; reset by every event and window edge that moves one)."""
        # tier
        self.tier: Tier = "none"
        self.tier_since: int | None = None
        self.below_since: int | None = None
        self.tier_reasons: tuple[Reason, ...] = ()
        # lifecycle
        self.stage: Stage = "prospect"
        self.stage_since: int | None = None
        self.stage_us: dict[Stage, int] = {}
        self.stage_entries: dict[Stage, int] = {"prospect": 1}
        self.react_base = 0
        self.stage_reasons: tuple[Reason, ...] = ()
        # alert
        self.alert_seq = 0
        self.alert_id: str | None = None
        self.alert_open = False
        self.alert_status: AlertState = "none"
        self.alert_severity: Severity = "warning"
        self.alert_since: int | None = None
        self.snooze_until: int | None = None
        self.alert_armed = True
        self.alert_reasons: tuple[Reason, ...] = ()

    def copy(self, *, share_log: bool = False, probe: bool = False) -> CustomerState:
        """An independent copy; ``share_log`` shares the event log (for read-only use);
        ``probe`` also shares what only a new event changes (the ids seen, the orders),
        for a copy that will only be advanced in time (`projections.next_deadline`)."""
        plain, containers, logs = _slot_kinds(self)
        shared = _EVENT_ONLY_SLOTS if probe else ()
        other = CustomerState(self.customer_id, self.policy)  # compiled: no bare __new__
        for name in plain:
            setattr(other, name, getattr(self, name))
        for name in containers:
            value = getattr(self, name)
            setattr(other, name, value if name in shared else value.copy())
        for name in logs:
            value = getattr(self, name)
            setattr(other, name, value if share_log or probe else list(value))
        return other

    def refresh_cadence(self) -> None:
        """Recompute the cached cadence values; they change only with a purchase."""
        policy = self.policy
        self.interval = cadence_of(
            policy, self.purchase_days, self.last_purchase_us - self.first_purchase_us
        )
        self.allowance = allowances_of(policy, self.interval)

    @property
    def last_event_key(self) -> tuple[int, str] | None:
        return self.keys[-1] if self.keys else None
