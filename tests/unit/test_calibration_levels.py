"""Alert levels from a budget, a target precision, or given by hand."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.calibration.levels import LevelError, LevelRule, choose_levels

RNG = np.random.default_rng(7)
NOW = RNG.integers(0, 1001, size=2000)
JUDGED = RNG.integers(0, 1001, size=2000)
# churn grows with the score: precision rises with the threshold
CHURNED = RNG.random(2000) < JUDGED / 1000


def test_a_budget_keeps_each_level_within_its_share_of_active_customers() -> None:
    rule = LevelRule(watch=0.25, warning=0.10, critical=0.03)
    levels = choose_levels(NOW, JUDGED, CHURNED, rule)
    assert levels["watch"].score < levels["warning"].score < levels["critical"].score
    for name, share in (("watch", 0.25), ("warning", 0.10), ("critical", 0.03)):
        figures = levels[name]
        assert figures.share_active <= share
        # the lowest such threshold: one step lower breaks the budget
        assert np.mean(figures.score - 1 <= NOW) > share
        assert figures.customers == int((figures.score <= NOW).sum())


def test_a_target_precision_raises_warning_above_the_budget_until_it_is_met() -> None:
    budget = choose_levels(NOW, JUDGED, CHURNED, LevelRule(warning=0.5))
    precise = choose_levels(NOW, JUDGED, CHURNED, LevelRule(warning=0.5, target_precision=0.9))
    assert precise["warning"].score > budget["warning"].score
    assert precise["warning"].precision >= 0.9
    assert budget["warning"].precision < 0.9


def test_an_unreachable_precision_is_refused_with_a_message() -> None:
    with pytest.raises(LevelError, match="precision"):
        choose_levels(NOW, JUDGED, np.zeros(2000, dtype=bool), LevelRule(target_precision=0.5))


def test_levels_given_by_hand_are_kept_and_measured() -> None:
    levels = choose_levels(NOW, JUDGED, CHURNED, LevelRule(fixed=(900, 950, 975)))
    assert [f.score for f in levels.values()] == [900, 950, 975]
    warning = levels["warning"]
    selected = JUDGED >= 950
    assert warning.precision == pytest.approx(CHURNED[selected].mean())
    assert warning.recall == pytest.approx((selected & CHURNED).sum() / CHURNED.sum())
    assert warning.share_active == pytest.approx(np.mean(NOW >= 950))


def test_no_active_customers_is_refused() -> None:
    with pytest.raises(LevelError, match="no active customers"):
        choose_levels(np.array([], dtype=np.int64), JUDGED, CHURNED, LevelRule())
