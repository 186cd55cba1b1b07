"""The solved score crossing is the first microsecond the score reaches the level."""

from __future__ import annotations

import random

import pytest

from infra.bootstrap import default_policy_text
from projections import apply, initial_state, load_policy
from projections import churn as signals
from projections.policy import DAY_US
from tests.unit.quality.simulate import event, purchase

DEFAULT = default_policy_text()
STEEP = DEFAULT.replace(
    'logit = ["-1", "-0.8", "-0.6", "-0.3", "0", "0.3", "0.6", "1", "1.5", "2", "3"]',
    'logit = ["-4", "-4", "-1", "-1", "0", "2", "2", "5", "5.5", "6", "9"]',
)
FLAT_TIME = DEFAULT.replace(
    'logit = ["0", "0", "0", "0.2", "0.4", "0.8", "1.2", "1.6", "2"]',
    'logit = ["0", "0", "0", "0", "0", "0", "0", "0", "0"]',
)
VARIANTS = [DEFAULT, STEEP, FLAT_TIME]


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
        for target in range(1, 101, 3):
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
    assert checked > 300


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
