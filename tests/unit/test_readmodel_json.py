"""The read models' fast JSON writer equals the plain one, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from adapters.populations import as_histories
from adapters.readmodels import snapshot_json
from adapters.simulate import simulate
from infra.bootstrap import default_policy_text
from projections import fold, load_policy, snapshot

END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize("seed", [3, 17])
def test_snapshot_json_equals_the_plain_encoding_of_to_dict(seed: int) -> None:
    policy = load_policy(default_policy_text())
    histories = dict(
        as_histories(simulate(customers=150, seed=seed, end=END).interactions, now=END)
    )
    compared = reasons = 0
    for customer_id, events in histories.items():
        for as_of in (events[len(events) // 2].occurred_at, END):
            view = snapshot(fold(customer_id, events, policy, as_of=as_of))
            assert snapshot_json(view) == orjson.dumps(view.to_dict()), customer_id
            compared += 1
            reasons += len(view.reasons) + len(view.churn_signals)
    assert compared == 2 * len(histories)
    assert reasons > compared  # the reasons, where the two encoders differ, were covered
