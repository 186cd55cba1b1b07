"""The closed-form score crossing equals the binary search over microseconds it replaced."""

from __future__ import annotations

import random

import pytest

from infra.bootstrap import default_policy_text
from projections import apply, initial_state, load_policy
from projections import churn as signals
from projections.policy import DAY_US
from tests.unit.quality.simulate import purchase

DEFAULT = default_policy_text()
VARIANTS = [
    DEFAULT,
    DEFAULT.replace('start_intervals = "1.0"', 'start_intervals = "0"'),
    DEFAULT.replace("recency_weight = 20", "recency_weight = 0"),
    DEFAULT.replace("weight = 70", "weight = 1").replace(
        'half_intervals = "1.0"', 'half_intervals = "0.3"'
    ),
    DEFAULT.replace("recency_half_days = 90", "recency_half_days = 1"),
]


@pytest.mark.parametrize("text", VARIANTS)
def test_the_solved_crossing_is_the_first_microsecond_the_search_finds(text: str) -> None:
    policy = load_policy(text)
    rng = random.Random(5)
    checked = 0
    for trial in range(300):
        state = initial_state("c", policy)
        day = 0.0
        for n in range(rng.randint(1, 8)):
            day += rng.expovariate(1 / rng.choice([0.5, 7, 30, 90]))
            state, _ = apply(state, purchase(f"p{trial}-{n}", day))
        after = state.last_purchase_us + rng.randint(0, 400 * DAY_US)
        until = after + rng.randint(1, 900 * DAY_US)
        for target in range(1, 101, 3):
            need = target * 100 - 50 - signals.other_centi(state, after)
            expected = None
            if signals.inactivity_centi(state, until) >= need:
                expected = signals.search_crossing(state, after, until, need)
                checked += 1
            assert signals.crossing(state, after, until, target) == expected
    assert checked > 500
