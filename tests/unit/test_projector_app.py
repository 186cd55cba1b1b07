"""The faust side of the projector (`streams.app.ProjectorApp`) without a broker: its
timer rides out a store that is down, with the retry policy infra hands in."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from adapters.retry import PROJECTOR_BATCH
from adapters.topics import TopicNames
from streams.app import ProjectorApp
from tests.unit.test_projector import Rig, _history


def test_a_tick_that_fails_is_retried_until_the_store_is_back() -> None:
    """While the store is down the timer's attempts fail; the tick is retried (instead
    of ending the faust app, which the role would restart for as long as the outage
    lasts), and once the store answers the due customer is advanced."""
    rig = Rig()
    rig.projector.handle(_history(rig.store, "c-1", [0, 3]))
    deadline = rig.sink.rows["c-1"].next_deadline
    assert deadline is not None
    calls: list[datetime] = []

    def due(until: datetime) -> list[tuple[str, int, int]]:
        calls.append(until)
        if len(calls) < 3:
            raise ConnectionError("the database is not accepting connections")
        return []

    policy = PROJECTOR_BATCH.starting_at(0.001)
    served = ProjectorApp(
        app=cast(Any, SimpleNamespace(should_stop=False)),
        projector=rig.projector,
        topics=TopicNames(prefix="t."),
        due=due,
        partition_of=None,
        clock=lambda: deadline + timedelta(seconds=len(calls)),
        retry=lambda attempt, stop: policy.call_async("tick", attempt, until=stop),
    )
    published = len(rig.publisher.changes)
    asyncio.run(served.tick())

    assert len(calls) == 3
    assert calls[-1] > calls[0], "each attempt reads the clock again"
    assert len(rig.publisher.changes) > published, "the due customer was advanced"
