"""The projector across merges, against in-memory fakes of its ports (the group loader
resolves links as `adapters.readmodels.StoreStateLoader` does): live equals replay, and
the answer does not depend on when the merged customer's events (late ones included)
were recorded relative to the merge."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime

import orjson
import pytest

from projections import Change, InputEvent, fold, initial_state
from projections.identity import links, own, union, view
from projections.ports import ChangePublisher, Group, GroupLoader, ReadModelRow, ReadModelSink
from streams.projector import Projector
from tests.unit.quality.simulate import at, event
from tests.unit.test_projector import POLICY, FakeStore

MERGE_DAY = 200.0


class GroupStore(FakeStore, GroupLoader):
    def __init__(self) -> None:
        super().__init__()
        self.heads: dict[str, tuple[int, int]] = {}

    def record(self, customer_id: str, item: InputEvent | None = None) -> bytes:
        message = super().record(customer_id, item)
        self.heads[customer_id] = (len(self.log[customer_id]), self.position)
        return message

    def load_group(
        self, customer_id: str, *, as_of: datetime | None, through_version: int | None
    ) -> Group:
        histories = {c: self.events(c) for c in list(self.log)}
        current = [lk for lk in links(histories[customer_id]) if lk.end is None]
        if not current:
            history = self.events(customer_id, through_version)
            state = (
                fold(customer_id, own(history), POLICY, as_of=max(e.occurred_at for e in history))
                if own(history)
                else initial_state(customer_id, POLICY)
            )
            return Group(customer_id, (), state, {customer_id: self.heads[customer_id]})
        survivor = current[0].survivor
        members = tuple(sorted(lk.merged for lk in links(histories[survivor]) if lk.end is None))
        everything = [e for c in (survivor, *members) for e in histories[c]]
        latest = max(e.occurred_at for e in everything)
        state = fold(
            survivor,
            union(histories[survivor], {m: histories[m] for m in members}),
            POLICY,
            as_of=latest if as_of is None else max(as_of, latest),
        )
        return Group(survivor, members, state, {c: self.heads[c] for c in (survivor, *members)})


class Sink(ReadModelSink):
    """Keeps the newest row by the PostgreSQL write rule (version, position, evaluation)."""

    def __init__(self) -> None:
        self.rows: dict[str, ReadModelRow] = {}

    def upsert(self, rows: Sequence[ReadModelRow]) -> None:
        for row in rows:
            known = self.rows.get(row.customer_id)
            if known is None or rank(row) > rank(known):
                self.rows[row.customer_id] = row


def rank(row: ReadModelRow) -> tuple[int, int, datetime]:
    return (row.applied_version, row.applied_position, row.snapshot.evaluated_at or at(-1e5))


class Published(ChangePublisher):
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def publish(self, changes: Sequence[Change]) -> None:
        self.changes.extend(changes)


def buy(prefix: str, n: int, day: float, amount: str = "400.00") -> InputEvent:
    return event(f"{prefix}/p{n}", "purchase", day, amount=amount, currency="EUR",
                 order_id=f"{prefix}{n}")  # fmt: skip


def merge_link(version: int) -> InputEvent:
    return event(f"identity/v{version}", "identity_merged", MERGE_DAY, version=version,
                 survivor="s", merged="m", by="kim", reason="same")  # fmt: skip


AFTER_MERGE = [
    ("m", buy("m", 10, 150, "900.00")),
    ("m", buy("m", 11, 205)),
    ("s", buy("s", 9, 207)),
]


def run(order: Sequence[int]) -> tuple[dict[str, bytes], Published]:
    store = GroupStore()
    sink, published = Sink(), Published()
    store.rows = sink.rows
    projector = Projector(policy=POLICY, loader=store, sink=sink, publisher=published, groups=store)
    messages = []
    for n, day in enumerate([10.0, 40, 70]):
        messages.append(store.record("s", buy("s", n, day)))
    for n, day in enumerate([20.0, 50, 80, 110]):
        messages.append(store.record("m", buy("m", n, day)))
    projector.handle(messages)
    later = [AFTER_MERGE[i] for i in order]
    split = len(later) // 2
    batch = [store.record(c, e) for c, e in later[:split]]
    batch.append(store.record("s", merge_link(0)))
    batch.append(store.record("m", merge_link(0)))
    batch.extend(store.record(c, e) for c, e in later[split:])
    for message in batch:
        projector.handle([message])
    histories = {c: store.events(c) for c in ("s", "m")}
    for customer, row in sink.rows.items():
        assert row.snapshot.evaluated_at is not None
        replayed = view(customer, histories, POLICY, as_of=row.snapshot.evaluated_at)
        assert row.snapshot == replayed, customer
    projector.tick(at(260))
    return {c: orjson.dumps(r.snapshot.to_dict()) for c, r in sink.rows.items()}, published


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_live_merge_is_order_robust_and_equals_replay(order: tuple[int, ...]) -> None:
    rows, published = run(order)
    reference, _ = run((0, 1, 2))
    assert rows == reference
    survivor = orjson.loads(rows["s"])
    assert survivor["purchase_count"] == 3 + 4 + 3
    assert orjson.loads(rows["m"])["merged_into"] == "s"
    assert any(r.rule == "identity.merged" for c in published.changes for r in c.reasons)
