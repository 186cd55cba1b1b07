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


class CustomerState:
    """Everything the fold needs for one customer; mutable, owned by one caller."""

    __slots__ = (
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
        "other_base",
        "payments",
        "policy",
        "prior",
        "prior_sum",
        "purchase_count",
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
        "subs",
        "survey",
        "ticket_dues",
        "ticket_memo",
        "ticket_rev",
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
        self.first_purchase_us = 0
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
        self.win: deque[tuple[int, Decimal, int, str]] = deque()
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
        self.ticket_rev = 0
        """Bumped at every change of ``tickets`` (keys ``ticket_memo``)."""
        self.ticket_memo: tuple[tuple[int, int], Reason | None] | None = None
        """The last tickets-past-SLA reason built, by (ticket_rev, breached count)."""
        self.trend = -1
        """Cached spend-trend points (-1: to compute); reset when either sum changes."""
        self.other_base = -1
        """Cached points of the signals but inactivity and tickets (-1: to compute)."""
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

    def copy(self, *, share_log: bool = False) -> CustomerState:
        """An independent copy; ``share_log`` shares the event log (for read-only use)."""
        other = CustomerState.__new__(CustomerState)
        for name in CustomerState.__slots__:
            value = getattr(self, name)
            if isinstance(value, deque | dict | set):
                value = value.copy()
            elif isinstance(value, list) and not (share_log and name in _LOG_SLOTS):
                value = list(value)
            setattr(other, name, value)
        return other

    def refresh_cadence(self) -> None:
        """Recompute the cached cadence values; they change only with a purchase."""
        policy = self.policy
        self.interval = cadence_of(
            policy, self.purchase_count, self.last_purchase_us - self.first_purchase_us
        )
        self.allowance = allowances_of(policy, self.interval)

    @property
    def last_event_key(self) -> tuple[int, str] | None:
        return self.keys[-1] if self.keys else None
