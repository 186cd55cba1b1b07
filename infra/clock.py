"""The one clock of an eventcrm process (ADR 0028).

Every business time — when an event is recorded, the "now" of a read, a token's
expiry, a checkpoint's time, the projector timer's instant, a webhook signature's
timestamp, the simulator's default end — comes from the `Clock` the composition root
(`infra.bootstrap.Root`) was given. The entry points give it `system_clock`; tests give
it a fixed one. Nothing else in `adapters/` or `infra/` reads the wall clock
(tests/unit/test_one_clock.py checks). Monotonic timers (timeouts, backoff, progress
rates) measure durations, not business time, and stay with `time.monotonic`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

Clock: TypeAlias = Callable[[], datetime]
"""Returns the current instant, timezone-aware, in UTC."""


def system_clock() -> datetime:
    """The wall clock in UTC (a module-level function, so a spawned role process can
    be handed it)."""
    return datetime.now(UTC)
