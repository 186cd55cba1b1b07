"""The projector core against in-memory fakes of its three ports: versions, reloads,
deadlines, failure handling, and live equals replay over a simulated population."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from adapters.simulate import simulate
from domain.interactions import parse_interaction
from projections import (
    Change,
    CustomerState,
    InputEvent,
    fold,
    initial_state,
    next_deadline,
    snapshot,
)
from projections.messages import CustomerEvent, WireError
from projections.ports import (
    ChangePublisher,
    Projected,
    ReadModelRow,
    ReadModelSink,
    StateLoader,
)
from streams.projector import Projector, parse_customer_event
from tests.unit.quality.policies import simple_policy
from tests.unit.quality.simulate import at, event, purchase

POLICY = simple_policy()  # round curves: a small population raises alerts
OPEN = {"raised", "escalated", "acknowledged", "snoozed"}


# --- fakes: the same ports the PostgreSQL and Kafka adapters implement -----------------


class FakeStore(StateLoader):
    """The event store and the relay in one: records events, hands out relay messages,
    and folds a customer's stored events like `adapters.readmodels.StoreStateLoader`."""

    def __init__(self) -> None:
        self.log: dict[str, list[InputEvent | None]] = defaultdict(list)
        self.position = 0
        self.loads: list[tuple[str, int]] = []
        self.rows: Mapping[str, ReadModelRow] = {}
        """The read models (a sink's), as `adapters.readmodels.StoreStateLoader` reads them."""

    def record(self, customer_id: str, item: InputEvent | None = None) -> bytes:
        """Store one event (a customer's first is its Created event); return the message
        the relay would publish for it."""
        events = self.log[customer_id]
        if not events:
            events.append(None)
            self.position += 1
            if item is None:
                return _message(customer_id, 1, self.position, None)
        version = len(events) + 1
        stored = None if item is None else _with_version(item, version)
        events.append(stored)
        self.position += 1
        return _message(customer_id, version, self.position, stored)

    def events(self, customer_id: str, through_version: int | None = None) -> list[InputEvent]:
        stored = self.log[customer_id][:through_version]
        return [e for e in stored if e is not None]

    def load(self, customer_id: str, *, through_version: int) -> CustomerState:
        self.loads.append((customer_id, through_version))
        events = self.events(customer_id, through_version)
        if not events:
            return initial_state(customer_id, POLICY)
        return fold(customer_id, events, POLICY, as_of=max(e.occurred_at for e in events))

    def projected(self, customer_ids: Sequence[str]) -> dict[str, Projected]:
        return {
            c: Projected(r.applied_version, r.applied_position, r.snapshot.evaluated_at)
            for c in customer_ids
            if (r := self.rows.get(c)) is not None
        }


class FakeSink(ReadModelSink):
    """Keeps the newest row per customer, by the rule the PostgreSQL store enforces."""

    def __init__(self, calls: list[str] | None = None) -> None:
        self.rows: dict[str, ReadModelRow] = {}
        self.batches: list[list[ReadModelRow]] = []
        self.calls = calls if calls is not None else []

    def upsert(self, rows: Sequence[ReadModelRow]) -> None:
        self.calls.append("upsert")
        self.batches.append(list(rows))
        for row in rows:
            known = self.rows.get(row.customer_id)
            if known is None or _rank(row) > _rank(known):
                self.rows[row.customer_id] = row


class FakePublisher(ChangePublisher):
    def __init__(self, calls: list[str] | None = None) -> None:
        self.changes: list[Change] = []
        self.calls = calls if calls is not None else []
        self.fail_next = False

    def publish(self, changes: Sequence[Change]) -> None:
        self.calls.append("publish")
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker unavailable")
        self.changes.extend(changes)


def _rank(row: ReadModelRow) -> tuple[int, datetime]:
    return (row.applied_version, row.snapshot.evaluated_at or datetime.min.replace(tzinfo=UTC))


def _with_version(item: InputEvent, version: int) -> InputEvent:
    return InputEvent(
        event_id=item.event_id,
        version=version,
        kind=item.kind,
        occurred_at=item.occurred_at,
        amount=item.amount,
        currency=item.currency,
        facts=item.facts,
    )


def _message(customer_id: str, version: int, position: int, item: InputEvent | None) -> bytes:
    """Exactly the shape `adapters.relay.Relay` publishes."""
    return orjson.dumps(
        {
            "position": position,
            "customer_id": customer_id,
            "version": version,
            "type": "Created" if version == 1 else "InteractionRecorded",
            "event": None if item is None else item.to_dict(),
        }
    )


class Rig:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.store = FakeStore()
        self.sink = FakeSink(self.calls)
        self.store.rows = self.sink.rows
        self.publisher = FakePublisher(self.calls)
        self.projector = self.new_projector()

    def new_projector(self) -> Projector:
        return Projector(policy=POLICY, loader=self.store, sink=self.sink, publisher=self.publisher)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def _history(store: FakeStore, customer_id: str, days: Sequence[float]) -> list[bytes]:
    messages = [store.record(customer_id)]
    for n, day in enumerate(days):
        messages.append(store.record(customer_id, purchase(f"{customer_id}-p{n}", day)))
    return messages


# --- the wire ------------------------------------------------------------------------


def test_a_relayed_message_parses_back_to_the_event_the_relay_published() -> None:
    original = InputEvent(
        event_id="ops/v7",
        version=7,
        kind="alert_snoozed",
        occurred_at=datetime(2025, 3, 1, 12, 30, tzinfo=UTC),
        facts={"alert_id": "alert-1", "by": "ana", "until": "2025-03-08T00:00:00+00:00"},
    )
    money = event("shop/1", "purchase", 3, amount="19.990", currency="EUR", version=2)
    assert parse_customer_event(_message("c-1", 7, 41, original)) == CustomerEvent(
        "c-1", 7, 41, original
    )
    parsed = parse_customer_event(_message("c-1", 2, 9, money)).event
    assert parsed == money
    assert parsed is not None
    assert parsed.amount == Decimal("19.990")
    assert parsed.occurred_at.utcoffset() == timedelta(0)
    assert parse_customer_event(_message("c-1", 1, 3, None)) == ("c-1", 1, 3, None)


GOOD: dict[str, Any] = orjson.loads(_message("c", 2, 5, _with_version(purchase("e", 1.0), 2)))


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({**GOOD, "customer_id": ""}), "customer_id"),
        (orjson.dumps({**GOOD, "version": 0}), "version"),
        (orjson.dumps({**GOOD, "version": True}), "version"),
        (orjson.dumps({**GOOD, "position": "5"}), "position"),
        (orjson.dumps({**GOOD, "event": []}), "event must be"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "version": 3}}), "event.version"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "amount": 10.0}}), "amount"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "amount": "NaN"}}), "amount"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "amount": "ten"}}), "amount"),
        (
            orjson.dumps({**GOOD, "event": {**GOOD["event"], "occurred_at": "2025-01-01T00:00"}}),
            "UTC offset",
        ),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "occurred_at": "soon"}}), "ISO"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "facts": [1]}}), "facts"),
        (orjson.dumps({**GOOD, "event": {**GOOD["event"], "kind": None}}), "kind"),
    ],
)
def test_a_malformed_message_is_refused_with_a_reason(message: bytes, complaint: str) -> None:
    with pytest.raises(WireError, match=complaint):
        parse_customer_event(message)


def test_a_malformed_message_leaves_the_projector_untouched(rig: Rig) -> None:
    good = _history(rig.store, "c-1", [1.0])
    with pytest.raises(WireError):
        rig.projector.handle([*good, b"garbage"])
    assert len(rig.projector) == 0
    assert rig.calls == []


# --- versions --------------------------------------------------------------------------


def test_duplicates_are_ignored(rig: Rig) -> None:
    messages = _history(rig.store, "c-1", [1.0, 20.0])
    first = rig.projector.handle([messages[0], messages[1], messages[1], messages[0]])
    again = rig.projector.handle(messages[:2])
    rest = rig.projector.handle([messages[2], messages[2], messages[1]])

    assert first
    assert again == []
    assert rig.sink.batches[-1][0].applied_version == 3
    assert len(rig.sink.batches) == 2, "a batch of duplicates writes nothing"
    assert rig.store.loads == []
    replayed = Rig()
    expected = replayed.projector.handle(_history(replayed.store, "c-1", [1.0, 20.0]))
    assert first + rest == expected


def test_an_unknown_customer_past_version_two_is_rebuilt_from_the_store(rig: Rig) -> None:
    messages = _history(rig.store, "c-1", [1.0, 20.0, 35.0])
    rig.projector.handle(messages[-1:])

    assert rig.store.loads == [("c-1", 3)]
    row = rig.sink.rows["c-1"]
    assert (row.applied_version, row.applied_position) == (4, 4)
    assert row.snapshot.purchase_count == 3
    assert row.snapshot == snapshot(fold("c-1", rig.store.events("c-1"), POLICY, as_of=at(35)))


def test_version_two_of_an_unknown_customer_needs_no_store_round_trip(rig: Rig) -> None:
    messages = _history(rig.store, "c-1", [1.0])
    rig.projector.handle(messages[1:])
    assert rig.store.loads == []
    assert rig.projector.applied_version("c-1") == 2


def test_a_version_gap_means_a_stale_state_and_triggers_a_reload(rig: Rig) -> None:
    messages = _history(rig.store, "c-1", [1.0, 20.0, 35.0, 50.0])
    rig.projector.handle(messages[:2])
    # versions 3 and 4 were projected by another worker meanwhile
    changes = rig.projector.handle(messages[4:])

    assert rig.store.loads == [("c-1", 4)]
    assert rig.projector.applied_version("c-1") == 5
    expected = snapshot(fold("c-1", rig.store.events("c-1"), POLICY, as_of=at(50)))
    assert rig.sink.rows["c-1"].snapshot == expected
    assert all(change.effective_at <= at(50) for change in changes)


def test_version_one_only_marks_the_customer_as_known(rig: Rig) -> None:
    assert rig.projector.handle([rig.store.record("c-1")]) == []
    assert rig.projector.applied_version("c-1") == 1
    row = rig.sink.rows["c-1"]
    assert (row.applied_version, row.next_deadline) == (1, None)
    assert row.snapshot.evaluated_at is None


# --- effects ----------------------------------------------------------------------------


def test_changes_are_published_before_read_models_are_written(rig: Rig) -> None:
    rig.projector.handle(_history(rig.store, "c-1", [1.0]))
    assert rig.calls == ["publish", "upsert"]


def test_one_upsert_per_call_with_one_row_per_touched_customer(rig: Rig) -> None:
    batch = [*_history(rig.store, "a", [1.0, 2.0]), *_history(rig.store, "b", [1.5])]
    rig.projector.handle(batch)
    assert len(rig.sink.batches) == 1
    assert sorted((r.customer_id, r.applied_version) for r in rig.sink.batches[0]) == [
        ("a", 3),
        ("b", 2),
    ]
    assert rig.sink.rows["a"].applied_position == 3
    assert rig.sink.rows["b"].applied_position == 5


def test_a_failed_publish_drops_the_state_so_a_redelivery_publishes_again(rig: Rig) -> None:
    messages = _history(rig.store, "c-1", [1.0, 20.0])
    rig.projector.handle(messages[:2])
    rig.publisher.fail_next = True
    with pytest.raises(ConnectionError):
        rig.projector.handle(messages[2:])

    assert rig.projector.applied_version("c-1") is None
    assert rig.sink.rows["c-1"].applied_version == 2, "nothing written after the failure"
    published = rig.projector.handle(messages[2:])  # the consumer redelivers the batch
    assert published
    assert rig.sink.rows["c-1"].applied_version == 3
    assert rig.store.loads == [("c-1", 2)]


# --- time ------------------------------------------------------------------------------


def test_tick_publishes_time_driven_changes_at_their_computed_deadline(rig: Rig) -> None:
    rig.projector.handle(_history(rig.store, "c-1", [0.0, 10.0, 20.0]))
    deadline = rig.sink.rows["c-1"].next_deadline
    assert deadline is not None
    published = len(rig.publisher.changes)

    assert rig.projector.tick(deadline - timedelta(microseconds=1)) == []
    late = deadline + timedelta(days=3)
    changes = rig.projector.tick(late)

    assert changes
    assert changes[0].effective_at == deadline, "the deadline, not when the timer fired"
    assert all(deadline <= c.effective_at <= late for c in changes)
    assert rig.publisher.changes[published:] == changes
    row = rig.sink.rows["c-1"]
    assert row.applied_version == 4, "time moves the row forward at the same version"
    assert row.snapshot.evaluated_at == late
    assert row.snapshot == snapshot(fold("c-1", rig.store.events("c-1"), POLICY, as_of=late))
    assert rig.projector.tick(late) == []


def test_a_whole_inactivity_path_fires_deadline_by_deadline(rig: Rig) -> None:
    rig.projector.handle(_history(rig.store, "c-1", [0.0, 7.0, 14.0, 21.0]))
    now = at(21)
    for _ in range(40):
        deadline = rig.sink.rows["c-1"].next_deadline
        if deadline is None:
            break
        now = deadline
        assert rig.projector.tick(now)
    else:
        pytest.fail("deadlines never ran out")
    lifecycle = [c.to_value for c in rig.publisher.changes if c.kind == "lifecycle"]
    assert lifecycle[-2:] == ["at_risk", "churned"]
    assert rig.sink.rows["c-1"].snapshot == snapshot(
        fold("c-1", rig.store.events("c-1"), POLICY, as_of=now)
    )


def test_tick_needs_an_aware_instant(rig: Rig) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rig.projector.tick(datetime(2025, 1, 1))


def test_after_a_restart_resume_rearms_the_customers_due(rig: Rig) -> None:
    rig.projector.handle(_history(rig.store, "c-1", [0.0, 10.0, 20.0]))
    row = rig.sink.rows["c-1"]
    assert row.next_deadline is not None
    restarted = rig.new_projector()
    due = [(row.customer_id, row.applied_version, row.applied_position)]

    assert restarted.resume(due) == 1
    assert restarted.resume(due) == 0, "already held at that version"
    changes = restarted.tick(row.next_deadline)
    assert changes
    assert changes[0].effective_at == row.next_deadline


def test_retain_drops_customers_another_worker_now_owns(rig: Rig) -> None:
    rig.projector.handle(
        [*_history(rig.store, "a", [0.0, 5.0]), *_history(rig.store, "b", [0.0, 5.0])]
    )
    assert rig.projector.retain(lambda customer_id: customer_id == "a") == 1
    assert rig.projector.applied_version("b") is None
    changes = rig.projector.tick(at(400))
    assert {c.customer_id for c in changes} == {"a"}


# --- a simulated population: live equals replay ------------------------------------------

END = datetime(2025, 6, 1, tzinfo=UTC)


def _population(rig: Rig, customers: int, seed: int) -> list[bytes]:
    """Simulated upstream traffic (late and repeated events included) as the store
    would record it and the relay publish it: an upstream repeat is stored once."""
    simulation = simulate(customers=customers, seed=seed, end=END, days=240)
    seen: set[str] = set()
    messages = []
    for raw in simulation.interactions:
        interaction = parse_interaction(raw, now=END, max_future_skew=timedelta(minutes=5))
        event_id = f"{interaction.source}/{interaction.event_id}"
        if event_id in seen:
            continue
        seen.add(event_id)
        money = interaction.money
        item = InputEvent(
            event_id=event_id,
            version=0,
            kind=interaction.kind.value,
            occurred_at=interaction.occurred_at,
            amount=None if money is None else money.amount,
            currency=None if money is None else money.currency,
            facts=dict(interaction.facts),
        )
        messages.append(rig.store.record(interaction.customer_id, item))
    return messages


def _run(rig: Rig, messages: list[bytes], *, batch: int, step: timedelta) -> datetime:
    """Deliver in batches (each batch at least once: every third is redelivered) while a
    timer ticks at the event time reached so far; returns the final tick instant."""
    now: datetime | None = None
    for n, start in enumerate(range(0, len(messages), batch)):
        chunk = messages[start : start + batch]
        rig.projector.handle(chunk)
        if n % 3 == 0:
            rig.projector.handle(chunk)
        latest = max(
            e.event.occurred_at for m in chunk if (e := parse_customer_event(m)).event is not None
        )
        if now is None or latest - now >= step:
            now = latest
            rig.projector.tick(now)
    final = END + timedelta(days=60)
    rig.projector.tick(final)
    return final


def test_live_read_models_equal_a_replay_of_the_stored_events(rig: Rig) -> None:
    messages = _population(rig, customers=25, seed=7)
    _run(rig, messages, batch=37, step=timedelta(days=3))

    assert set(rig.sink.rows) == set(rig.store.log)
    for customer_id, row in rig.sink.rows.items():
        events = rig.store.events(customer_id)
        assert row.applied_version == len(rig.store.log[customer_id])
        evaluated = row.snapshot.evaluated_at
        assert evaluated is not None
        replayed = fold(customer_id, events, POLICY, as_of=evaluated)
        assert row.snapshot == snapshot(replayed), customer_id
        assert row.next_deadline == next_deadline(replayed)


def test_a_restarted_projector_converges_to_the_same_read_models(rig: Rig) -> None:
    messages = _population(rig, customers=15, seed=11)
    cut = len(messages) // 2
    _run(rig, messages[:cut], batch=50, step=timedelta(days=5))
    # A new worker starts from the middle (its cache lost), with the read models.
    restarted = rig.new_projector()
    rig.projector = restarted
    due = [
        (r.customer_id, r.applied_version, r.applied_position)
        for r in rig.sink.rows.values()
        if r.next_deadline is not None
    ]
    restarted.resume(due)
    final = _run(rig, messages[cut - 40 :], batch=50, step=timedelta(days=5))

    for customer_id, row in rig.sink.rows.items():
        events = rig.store.events(customer_id)
        replayed = fold(customer_id, events, POLICY, as_of=final)
        assert row.snapshot.evaluated_at is not None
        if row.next_deadline is None or row.next_deadline > final:
            visible = snapshot(replayed)
            assert (row.snapshot.tier, row.snapshot.lifecycle_stage) == (
                visible.tier,
                visible.lifecycle_stage,
            ), customer_id
            assert (row.snapshot.alert_state, row.snapshot.alert_id) == (
                visible.alert_state,
                visible.alert_id,
            ), customer_id


def test_never_two_open_alerts_and_every_alert_id_is_deterministic(rig: Rig) -> None:
    messages = _population(rig, customers=40, seed=3)
    _run(rig, messages, batch=64, step=timedelta(days=2))

    alerts = [c for c in rig.publisher.changes if c.kind == "alert"]
    assert alerts, "the population should raise some alerts"
    by_customer: dict[str, list[Change]] = defaultdict(list)
    for change in alerts:
        by_customer[change.customer_id].append(change)
    for customer_id, changes in by_customer.items():
        open_id: str | None = None
        for change in changes:
            assert change.alert_id is not None
            if change.to_value in OPEN:
                assert open_id in (None, change.alert_id), f"{customer_id}: two open alerts"
                open_id = change.alert_id
            elif change.alert_id == open_id:
                open_id = None
    # The same traffic on a fresh rig publishes the same alert ids.
    again = Rig()
    _run(again, _population(again, customers=40, seed=3), batch=64, step=timedelta(days=2))
    assert {c.alert_id for c in again.publisher.changes if c.kind == "alert"} == {
        c.alert_id for c in alerts
    }


def _subscriber_view(changes: Sequence[Change]) -> dict[str, tuple[str, str | None]]:
    """Each customer's alert as a `churn-alerts` subscriber that deduplicates by
    `change_id` sees it: the last change it had not seen before (docs/topics.md)."""
    seen: set[str] = set()
    view: dict[str, tuple[str, str | None]] = {}
    for change in changes:
        if change.kind == "alert" and change.change_id not in seen:
            seen.add(change.change_id)
            view[change.customer_id] = (change.to_value, change.alert_id)
    return view


def _alerts_differing(rig: Rig) -> dict[str, tuple[Any, Any]]:
    """Customers whose alert, as the subscriber sees it, is not the read model's, where
    either holds one open (the fault oracle's `alerts_left_open` and alert mismatches)."""
    view = _subscriber_view(rig.publisher.changes)
    differ = {}
    for customer_id, row in rig.sink.rows.items():
        held = (row.snapshot.alert_state, row.snapshot.alert_id)
        said = view.get(customer_id, ("none", None))
        if (said[0] in OPEN or held[0] in OPEN) and said != held:
            differ[customer_id] = (said, held)
    return differ


@pytest.mark.parametrize(("seed", "batch", "ticks_every"), [(0, 37, 1), (1, 64, 3), (2, 100, 1)])
def test_a_subscriber_ends_with_the_read_models_alert_when_late_events_refold(
    rig: Rig, seed: int, batch: int, ticks_every: int
) -> None:
    """The timer advances every held customer to a "now" past the whole stream (as the
    wall clock does while history is still arriving), so most later events are late and
    refold: the corrections must reach a subscriber that deduplicates by `change_id`,
    even when one lands where an earlier change did."""
    messages = _population(rig, customers=40, seed=seed)
    now = END + timedelta(days=30)
    for n, start in enumerate(range(0, len(messages), batch)):
        rig.projector.handle(messages[start : start + batch])
        if n % ticks_every == 0:
            rig.projector.tick(now)
    rig.projector.tick(now)

    assert any(
        r.rule == "late_event.recomputed" for c in rig.publisher.changes for r in c.reasons
    ), "late events were refolded"
    assert not _alerts_differing(rig)


@pytest.mark.parametrize("seed", [7, 9, 20, 21, 28])
def test_a_subscriber_ends_with_the_read_models_alert_across_restarts_and_redeliveries(
    rig: Rig, seed: int
) -> None:
    """As above, with the projector restarted now and then (its cache lost; the relay
    redelivers from a little earlier; `resume` re-arms the due timers) and batches
    failing and redelivered: a reloaded customer goes on from what the last worker
    published (its stored read model), not from its last event."""
    rng = random.Random(seed)
    messages = _population(rig, customers=40, seed=seed)
    now = END + timedelta(days=rng.choice([1, 30, 200]))
    start, restarts = 0, 0
    while start < len(messages):
        chunk = messages[start : start + rng.randint(1, 50)]
        rig.projector.handle(chunk)
        roll = rng.random()
        if roll < 0.1:
            rig.projector.handle(chunk)  # redelivered
        elif roll < 0.13:
            restarts += 1
            rig.projector = rig.new_projector()
            rig.projector.resume(
                (r.customer_id, r.applied_version, r.applied_position)
                for r in rig.sink.rows.values()
                if r.next_deadline is not None and r.next_deadline <= now
            )
            start -= rng.randint(0, min(start, 60))  # from an older committed offset
        elif roll < 0.16:
            rig.publisher.fail_next = True
            with contextlib.suppress(ConnectionError):
                rig.projector.handle(chunk)
            rig.publisher.fail_next = False
            rig.projector.handle(chunk)
        if rng.random() < 0.5:
            rig.projector.tick(now)
        start += len(chunk)
    rig.projector.tick(now)

    assert restarts
    for customer_id, row in rig.sink.rows.items():
        assert row.applied_version == len(rig.store.log[customer_id])
        assert row.snapshot.evaluated_at is not None
        replayed = fold(
            customer_id, rig.store.events(customer_id), POLICY, as_of=row.snapshot.evaluated_at
        )
        assert row.snapshot == snapshot(replayed), customer_id
    assert not _alerts_differing(rig)


def test_a_worker_does_not_advance_a_customer_another_worker_projected_since(
    rig: Rig,
) -> None:
    """A worker frozen past its session (or not yet told of a rebalance) still holds a
    customer that another worker has since projected further: its timer must not
    publish changes from the stale state after the other's; it forgets the customer."""
    messages = _history(rig.store, "c-1", [0, 3])
    rig.projector.handle(messages)
    stale = rig.projector
    deadline = rig.sink.rows["c-1"].next_deadline
    assert deadline is not None
    survivor = rig.new_projector()
    survivor.handle([rig.store.record("c-1", purchase("c-1-late", 4))])
    published = len(rig.publisher.changes)

    assert stale.tick(deadline + timedelta(days=400)) == []
    assert len(rig.publisher.changes) == published
    assert stale.applied_version("c-1") is None
