"""The named retry policies: their waits, their give-up limits, their stop conditions."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tenacity import RetryCallState

from adapters.retry import (
    POLICIES,
    ROLE_RESTART,
    STORE_UNAVAILABLE,
    WRITE_CONFLICT,
    RetryPolicy,
)

DOCS = Path(__file__).parents[2] / "docs" / "retries.md"


def waits(policy: RetryPolicy, attempts: int) -> list[float]:
    wait = policy.waits()
    values = []
    for attempt in range(1, attempts + 1):
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        values.append(wait(state))
    return values


def test_without_jitter_waits_double_from_the_first_up_to_the_cap() -> None:
    policy = RetryPolicy("t", first_wait=0.5, max_wait=3.0, jitter=0.0)
    assert waits(policy, 5) == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_every_wait_lies_between_its_steady_share_and_the_full_backoff(
    policy: RetryPolicy,
) -> None:
    steady = replace(policy, jitter=0.0)
    for _ in range(200):
        for drawn, full in zip(waits(policy, 8), waits(steady, 8), strict=True):
            assert full * (1 - policy.jitter) - 1e-9 <= drawn <= full + 1e-9


def test_a_policy_scaled_to_another_first_wait_keeps_its_curve() -> None:
    fast = STORE_UNAVAILABLE.starting_at(0.1)
    assert (
        fast.max_wait / fast.first_wait == STORE_UNAVAILABLE.max_wait / STORE_UNAVAILABLE.first_wait
    )
    assert waits(replace(fast, jitter=0.0), 2) == [0.1, 0.2]


def test_write_conflicts_give_up_after_their_attempts_with_the_last_error() -> None:
    calls = []

    def conflict() -> None:
        calls.append(1)
        raise ValueError(f"conflict {len(calls)}")

    with pytest.raises(ValueError, match="conflict 12"):
        WRITE_CONFLICT.starting_at(1e-4).call("t", conflict, on=ValueError)
    assert len(calls) == WRITE_CONFLICT.give_up_attempts == 12


def test_an_error_the_site_does_not_retry_goes_up_at_once() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("not a conflict")

    with pytest.raises(KeyError):
        WRITE_CONFLICT.call("t", broken, on=ValueError)
    assert calls == [1]


def test_a_retry_succeeds_once_the_failure_passes() -> None:
    outcomes = iter([ValueError("down"), ValueError("down"), "up"])

    def flaky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert STORE_UNAVAILABLE.starting_at(1e-4).call("t", flaky, on=ValueError) == "up"


def test_setting_the_stop_event_cuts_a_long_pause_short_and_gives_up() -> None:
    stop = threading.Event()
    slow = RetryPolicy("slow", first_wait=3600.0, max_wait=3600.0, jitter=0.0)
    attempts = slow.retrying("t", on=ValueError, until=stop)
    calls = []

    def down() -> None:
        calls.append(1)
        raise ValueError("down")

    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ValueError, match="down"):
        attempts(down)  # would sleep an hour without the event
    assert calls == [1]


def test_a_role_restart_waits_about_its_pause_and_never_grows() -> None:
    assert all(0.8 <= w <= 1.0 for w in waits(ROLE_RESTART, 10))


def test_an_async_retry_stops_once_its_predicate_says_so() -> None:
    calls = []

    async def down() -> None:
        calls.append(1)
        raise ValueError("down")

    async def main() -> None:
        await STORE_UNAVAILABLE.starting_at(1e-4).call_async(
            "t", down, until=lambda: len(calls) >= 3
        )

    with pytest.raises(ValueError, match="down"):
        asyncio.run(main())
    assert len(calls) == 3


def test_every_policy_has_a_distinct_name_and_is_in_the_documented_table() -> None:
    names = [p.name for p in POLICIES]
    assert len(set(names)) == len(names)
    table = DOCS.read_text("utf-8")
    for policy in POLICIES:
        assert f"`{policy.name}`" in table
