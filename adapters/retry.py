"""Every "try again" of eventcrm, in one place: named policies on tenacity.

A site picks a policy by name and says what it retries on and when to stop trying;
the policy says how long to wait between attempts (exponential backoff from
``first_wait`` doubling up to ``max_wait``, a ``jitter`` share of each wait drawn at
random) and when to give up. docs/retries.md has the table of sites and policies.

Streams code (which may not import adapters) gets its retrying handed in by infra.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    stop_when_event_set,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

log = logging.getLogger(__name__)

T = TypeVar("T")

Errors = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one kind of failure is retried."""

    name: str
    first_wait: float
    """Seconds before the second attempt; each later wait doubles, up to `max_wait`."""
    max_wait: float
    jitter: float
    """Share of each wait drawn at random (0: none; 1: "full jitter", uniform in
    [0, wait]): spreads out writers or workers that failed together."""
    give_up_attempts: int | None = None
    """Attempts in all before the last error goes up; None: never give up."""
    give_up_seconds: float | None = None
    """No attempt starts later than this after the first; None: no deadline."""
    level: int = logging.WARNING
    """Log level of "failed, retrying"; ERROR and above log the traceback too."""

    def starting_at(self, first_wait: float) -> RetryPolicy:
        """The same curve, scaled to another first wait (tests run on fast timings)."""
        scale = first_wait / self.first_wait
        return replace(self, first_wait=first_wait, max_wait=self.max_wait * scale)

    def waits(self) -> wait_base:
        steady = 1.0 - self.jitter
        fixed = wait_exponential(multiplier=self.first_wait * steady, max=self.max_wait * steady)
        if self.jitter == 0:
            return fixed
        drawn = wait_random_exponential(
            multiplier=self.first_wait * self.jitter, max=self.max_wait * self.jitter
        )
        return drawn if steady == 0 else fixed + drawn

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after ``attempt`` failures:
        the same curve as `retrying`, for sites that keep their retry state in a
        table (the webhook outbox's ``next_attempt_at``) instead of a loop."""
        state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt)
        return float(self.waits()(state))

    def _give_up(self) -> stop_base:
        stop: stop_base = stop_never
        if self.give_up_attempts is not None:
            stop = stop | stop_after_attempt(self.give_up_attempts)
        if self.give_up_seconds is not None:
            stop = stop | stop_before_delay(self.give_up_seconds)
        return stop

    def _log(self, what: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.log(
                self.level,
                "%s failed (attempt %d; %s): %s; retrying in %.2f s",
                what,
                state.attempt_number,
                self.name,
                error,
                state.upcoming_sleep,
                exc_info=error if self.level >= logging.ERROR else None,
            )

        return before_sleep

    def retrying(self, what: str, *, on: Errors, until: threading.Event | None = None) -> Retrying:
        """Retry ``on`` these errors; the last one goes up once the policy gives up or
        ``until`` is set (which also cuts a pause short: no attempt starts after it)."""
        log_it = self._log(what)
        failed: list[BaseException] = []

        def before_sleep(state: RetryCallState) -> None:
            log_it(state)
            error = state.outcome.exception() if state.outcome else None
            failed[:] = [error] if error is not None else []

        def sleep(seconds: float) -> None:
            if until is None:
                time.sleep(seconds)
            elif until.wait(seconds) and failed:
                raise failed[0]  # stopped mid-pause: no further attempt

        stop = self._give_up()
        return Retrying(
            retry=retry_if_exception_type(on),
            wait=self.waits(),
            stop=stop if until is None else stop | stop_when_event_set(until),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def async_retrying(
        self, what: str, *, on: Errors, until: Callable[[], bool] | None = None
    ) -> AsyncRetrying:
        """`retrying` for coroutines (the pause is an asyncio sleep)."""
        stop = self._give_up()
        if until is not None:
            stop = stop | _StopWhen(until)
        return AsyncRetrying(
            retry=retry_if_exception_type(on),
            wait=self.waits(),
            stop=stop,
            before_sleep=self._log(what),
            reraise=True,
        )

    def call(self, what: str, attempt: Callable[[], T], *, on: Errors) -> T:
        return self.retrying(what, on=on)(attempt)

    async def call_async(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        on: Errors = Exception,
        until: Callable[[], bool] | None = None,
    ) -> T:
        return await self.async_retrying(what, on=on, until=until)(attempt)


class _StopWhen(stop_base):
    """Stop retrying once a predicate holds (an app that is stopping)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._predicate()


WRITE_CONFLICT: Final = RetryPolicy(
    "write-conflict",
    first_wait=0.01,
    max_wait=0.5,
    jitter=1.0,
    give_up_attempts=12,
    level=logging.INFO,
)
"""A batch or an alert action lost an optimistic-concurrency race (another writer
appended to one of its customers first): reload and write again, soon, with full
jitter so a writer that keeps losing to a faster one gets its turn."""

STORE_UNAVAILABLE: Final = RetryPolicy(
    "store-unavailable", first_wait=1.0, max_wait=8.0, jitter=0.2
)
"""The ingest could not reach the store: rewind the batch and try again, backing off,
until it lands or the role stops (never dropped: its offsets were not stored)."""

PROJECTOR_BATCH: Final = RetryPolicy(
    "projector-batch", first_wait=1.0, max_wait=8.0, jitter=0.2, level=logging.ERROR
)
"""A batch of customer events failed to project (store or producer trouble): retry it
until it lands or the app stops; redelivery would bring the same batch back anyway."""

ROLE_RESTART: Final = RetryPolicy(
    "role-restart", first_wait=1.0, max_wait=1.0, jitter=0.2, level=logging.ERROR
)
"""A pipeline role died: start it again after a steady pause, forever (RELIABILITY G12).
No growth: a role that recovers from a long outage should not sleep long afterwards."""

BROKER_PORT_IN_USE: Final = RetryPolicy(
    "broker-port-in-use", first_wait=0.05, max_wait=1.0, jitter=0.0, level=logging.INFO
)
"""The embedded broker's port is still held by the previous broker's connections in
TIME_WAIT: spawn it again, until its start timeout (set per call)."""

WEBHOOK_DELIVERY: Final = RetryPolicy(
    "webhook-delivery", first_wait=2.0, max_wait=300.0, jitter=0.2, give_up_attempts=10
)
"""A webhook endpoint failed (no answer, or not 2xx): its pending deliveries wait, doubling
from 2 s to 5 minutes. After ``give_up_attempts`` failures in a row the subscription is
marked dead and reported; its deliveries are kept and probed every ``max_wait`` until the
endpoint answers again (adapters.webhooks, ADR 0023): never dropped."""

POLICIES: Final = (
    WRITE_CONFLICT,
    STORE_UNAVAILABLE,
    PROJECTOR_BATCH,
    ROLE_RESTART,
    BROKER_PORT_IN_USE,
    WEBHOOK_DELIVERY,
)
