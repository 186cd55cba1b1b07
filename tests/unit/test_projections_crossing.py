"""The solved score crossing is the first microsecond the score reaches the level."""

from __future__ import annotations

import random

import pytest

from infra.bootstrap import default_policy_text
from projections import apply, initial_state, load_policy
from projections import churn as signals
from projections.policy import DAY_US
from tests.unit.quality.policies import simple_policy_text
from tests.unit.quality.simulate import event, purchase

VARIANTS = [
    default_policy_text(),
    simple_policy_text(),
    simple_policy_text(  # steep steps and a cadence curve: both time signals at once
        curves={
            "recency": ([0, 1, 2, 30, 31, 400], ["-4", "-4", "2", "2", "5", "9"]),
            "relative_recency": (["0", "0.5", "1", "3"], ["0", "0", "1.5", "1.5"]),
        }
    ),
    simple_policy_text(curves={"recency": ([0, 1], ["0", "0"])}),  # no time effect at all
]


@pytest.mark.parametrize("text", VARIANTS)
def test_the_crossing_is_the_first_microsecond_at_or_over_the_level(text: str) -> None:
    policy = load_policy(text)
    rng = random.Random(5)
    checked = 0
    for trial in range(200):
        state = initial_state("c", policy)
        day = 0.0
        for n in range(rng.randint(1, 8)):
            day += rng.expovariate(1 / rng.choice([0.5, 7, 30, 90]))
            state, _ = apply(state, purchase(f"p{trial}-{n}", day))
        if rng.random() < 0.3:
            state, _ = apply(state, event(f"c{trial}", "complaint", day + 1, severity="high"))
        after = (state.last_commerce_us or 0) + rng.randint(0, 400 * DAY_US)
        until = after + rng.randint(1, 900 * DAY_US)
        for target in range(1, 1001, 17):  # score steps (tenths of a point)
            found = signals.crossing(state, after, until, target)
            if signals.score_at(state, until) < target:
                assert found is None
                continue
            assert found is not None
            assert after < found <= until
            assert signals.score_at(state, found) >= target
            if found - 1 > after:
                assert signals.score_at(state, found - 1) < target
                checked += 1
    # a policy without a time effect has a constant score: it is at the level or never
    assert checked > 300 if text is not VARIANTS[-1] else checked == 0


@pytest.mark.parametrize("text", VARIANTS)
def test_between_events_the_score_never_falls(text: str) -> None:
    policy = load_policy(text)
    rng = random.Random(9)
    for trial in range(100):
        state = initial_state("c", policy)
        day = 0.0
        for n in range(rng.randint(1, 6)):
            day += rng.expovariate(1 / 30)
            state, _ = apply(state, purchase(f"p{trial}-{n}", day))
        start = state.last_commerce_us or 0
        scores = [signals.score_at(state, start + k * DAY_US // 4) for k in range(0, 4 * 800, 7)]
        assert scores == sorted(scores)
