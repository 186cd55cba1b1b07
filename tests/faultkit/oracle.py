"""The one oracle every fault test (and `make fault-long`) judges a run by.

A run publishes valid interactions (duplicates and redeliveries included) and bad
records to `interactions`; whatever faults it injects, afterwards:

- **stored once**: every distinct ``(source, event_id)`` has exactly one idempotency key
  and one event, versions run 1..n per customer (+1 for `Created`) — none *lost*, none
  *duplicated*;
- **consumed == published**: the ingest's stored positions on the current incarnation
  of `interactions` add up to the records published there;
- **the DLQ topic equals the bad records**: one dead letter per bad record, counted by
  consuming the topic (deduplicated by `dead_letter_id`: the relay may publish twice),
  each with the code its class must get, and applied + dead-lettered == published;
- **read models equal a replay** (`adapters.readmodels.audit`): none missing, stale,
  extra, or different;
- **the `churn-alerts` stream agrees with the replay**: each customer's last alert
  change on it (deduplicated by `change_id`) is the replay's current alert, and no
  alert the replay holds is missing; the strict comparison by `change_id` is reported
  as `alert_path_differences` (docs/faults.md says why it is not asserted).

`judge` returns a `Verdict` of counts (the fault-long summary adds them up);
`Verdict.assert_clean` fails a test with the first examples of each kind.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from eventsourcing.persistence import PersistenceError
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from adapters.ingest import position_name
from adapters.readmodels import ReadModelStore, audit
from adapters.readside import ProjectionReader
from adapters.relay import DLQ_POSITION
from adapters.relay import position_name as relay_position
from adapters.store import CustomerStore
from adapters.topics import TopicNames, TopicWatch, incarnation_of, read_topic
from projections import Change, Policy, replay
from projections.vocabulary import OPEN_ALERT_STATES
from tests.faultkit.badrecords import BadRecord


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    unconsumed: int = 0
    """published - consumed on the current incarnation (negative: consumed more)."""
    dead_letter_mismatches: int = 0
    read_model_mismatches: int = 0
    alert_mismatches: int = 0
    alerts_seen: int = 0
    alert_path_differences: int = 0
    alerts_left_open: int = 0
    """Customers whose last alert change on the stream leaves open an alert the replay
    has closed or never raised (reported, not asserted: docs/faults.md)."""
    """Alert changes on the stream and not in the replay, or the other way round, by
    `change_id` (reported, not asserted: docs/faults.md)."""
    dead_letters_on_topic: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unconsumed
            or self.dead_letter_mismatches
            or self.read_model_mismatches
            or self.alert_mismatches
        )

    def assert_clean(self) -> None:
        assert self.clean, self.summary()

    def summary(self) -> str:
        counts = {
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unconsumed": self.unconsumed,
            "dead-letter mismatches": self.dead_letter_mismatches,
            "read-model mismatches": self.read_model_mismatches,
            "alert mismatches": self.alert_mismatches,
        }
        return f"{counts}; examples: {self.details}"


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def consumed(store: CustomerStore, bootstrap: str, names: TopicNames) -> int:
    """Offsets of the current `interactions` incarnation the ingest has applied."""
    topic = names.interactions
    watch = TopicWatch(bootstrap, [topic])
    try:
        incarnation = incarnation_of(watch.ids()[topic])
    finally:
        watch.close()
    positions = (
        store.position(position_name(topic, p, incarnation))
        for p in range(max(names.partitions()[topic], partition_count(bootstrap, topic)))
    )
    return sum(position + 1 for position in positions if position is not None)


def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions the broker says ``topic`` has now (0: none)."""
    client = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return len(client.partitions_for_topic(topic) or ())
    finally:
        client.close()


def expected_alerts(
    store: CustomerStore, read_models: ReadModelStore, policy: Policy
) -> dict[str, Change]:
    """The alert changes a replay of every customer, up to its read model's evaluation
    instant, makes: what `churn-alerts` must hold, by `change_id`."""
    models = {m.customer_id: m for m in read_models.all()}
    expected: dict[str, Change] = {}
    for history in ProjectionReader(store, policy).histories():
        model = models.get(history.customer_id)
        if model is None or model.evaluated_at is None:
            continue
        events = [e for e in history.events if e.version <= model.applied_version]
        for step in replay(model.customer_id, events, policy, as_of=model.evaluated_at):
            expected.update((c.change_id, c) for c in step.changes if c.kind == "alert")
    return expected


def judge(  # noqa: PLR0912 - one pass over every check, kept together
    *,
    url: str,
    store: CustomerStore,
    policy: Policy,
    bootstrap: str,
    names: TopicNames,
    valid: Sequence[dict[str, Any]],
    bad: Sequence[BadRecord] = (),
    published: int,
    check_read_models: bool = True,
    seen_alerts: Sequence[bytes] = (),
) -> Verdict:
    """Everything the oracle checks, as counts; ``published`` is the number of records
    sent to the current incarnation of `interactions`; ``seen_alerts`` are alert
    messages a subscriber read from an earlier incarnation (a wiped broker)."""
    verdict = Verdict()
    started = time.monotonic()
    keys = {(i["source"], i["event_id"]): i["customer_id"] for i in valid}
    per_customer = Counter(keys.values())

    # Stored once.
    stored = Counter((s, e) for s, e in _rows(url, "SELECT source, event_id FROM interaction_keys"))
    lost = set(keys) - set(stored)
    extra_keys = set(stored) - set(keys)
    verdict.lost = len(lost)
    verdict.duplicated = sum(n - 1 for n in stored.values() if n > 1) + len(extra_keys)
    if lost:
        verdict.details["lost"] = sorted(lost)[:3]
    if extra_keys:
        verdict.details["unexpected keys"] = sorted(extra_keys)[:3]
    for customer_id, expected in per_customer.items():
        versions = [version for version, _, _ in store.stored_events(customer_id)]
        if versions != list(range(1, expected + 2)):
            surplus = max(0, len(versions) - expected - 1)
            verdict.duplicated += surplus
            if not surplus:
                verdict.lost += 0 if customer_id in {keys[k] for k in lost} else 1
            verdict.details.setdefault("versions", []).append((customer_id, versions[-3:]))

    # Consumed == published.
    verdict.unconsumed = published - consumed(store, bootstrap, names)

    # The DLQ topic equals the bad records.
    letters: dict[int, dict[str, Any]] = {}
    for record in read_topic(bootstrap, names.interactions_dlq):
        letter = orjson.loads(record.value)
        letters[letter["dead_letter_id"]] = letter
    verdict.dead_letters_on_topic = len(letters)
    on_topic = Counter(letter["code"] for letter in letters.values())
    wanted = Counter(b.code for b in bad)
    stored_letters = _rows(url, "SELECT id FROM dead_letters")
    verdict.dead_letter_mismatches = sum((on_topic - wanted).values()) + sum(
        (wanted - on_topic).values()
    )
    verdict.dead_letter_mismatches += abs(len(stored_letters) - len(letters))
    if verdict.dead_letter_mismatches:
        verdict.details["dead letters (topic, wanted)"] = (dict(on_topic), dict(wanted))
    applied = len(stored) + (len(valid) - len(keys))
    if verdict.unconsumed == 0 and applied + len(letters) != published:
        verdict.dead_letter_mismatches += abs(published - applied - len(letters))
        verdict.details["applied + dead-lettered"] = (applied, len(letters), published)

    read_models = ReadModelStore(store)
    lap = time.monotonic()
    if check_read_models:
        found = audit(read_models, store, policy)
        verdict.read_model_mismatches = (
            len(found.missing) + len(found.extra) + len(found.stale) + len(found.ahead)
        ) + len(found.differences)
        if verdict.read_model_mismatches:
            verdict.details["read models"] = {
                "missing": found.missing[:3],
                "stale": found.stale[:3],
                "extra": found.extra[:3],
                "differences": [str(d) for d in found.differences[:3]],
            }

    verdict.details["audit seconds"] = round(time.monotonic() - lap, 1)
    lap = time.monotonic()
    # The churn-alerts stream against the replay. Asserted: each customer's last alert
    # change on the stream says what the replay (= the read model, audited above) says
    # now, and every alert the replay holds is on the stream. Reported: the strict
    # comparison by `change_id` (see docs/faults.md: live folds in arrival order, so a
    # late event can make it publish a transition a full replay never goes through).
    messages = [orjson.loads(v) for v in seen_alerts]
    messages += [orjson.loads(r.value) for r in read_topic(bootstrap, names.churn_alerts)]
    seen = {m["change_id"] for m in messages}
    verdict.alerts_seen = len(seen)
    # A subscriber deduplicating by `change_id` ignores a change it has seen (a
    # redelivered batch publishes its changes again): its view of a customer is the
    # last *first* occurrence. It must agree with the replay on the open alert: which
    # one (id and state), or that there is none (closed, resolved or never raised).
    last: dict[str, dict[str, Any]] = {}
    first_seen: set[str] = set()
    for message in messages:
        if message["change_id"] not in first_seen:
            first_seen.add(message["change_id"])
            last[message["customer_id"]] = message
    wrong: list[Any] = []
    stale: list[Any] = []
    for model in read_models.all():
        final = last.get(model.customer_id)
        said = ("none", None) if final is None else (final["to_value"], final["alert_id"])
        stream_open = said[0] in OPEN_ALERT_STATES
        replay_open = model.alert_state in OPEN_ALERT_STATES
        if replay_open and said != (model.alert_state, model.alert_id):
            # An alert open now that a subscriber does not see as it is: asserted.
            wrong.append((model.customer_id, said, (model.alert_state, model.alert_id)))
        elif stream_open and not replay_open:
            # The stream leaves open an alert the replay has closed: reported.
            stale.append((model.customer_id, said, (model.alert_state, model.alert_id)))
    verdict.alert_mismatches = len(wrong)
    verdict.alerts_left_open = len(stale)
    if stale:
        verdict.details["alerts left open on the stream (reported)"] = stale[:3]
    if wrong:
        verdict.details["alerts (customer, stream, replay)"] = wrong[:3]
    expected = expected_alerts(store, read_models, policy)
    missing, extra = set(expected) - seen, seen - set(expected)
    verdict.alert_path_differences = len(missing) + len(extra)
    verdict.details["alerts seconds"] = round(time.monotonic() - lap, 1)
    verdict.details["judged in seconds"] = round(time.monotonic() - started, 1)
    return verdict


def settled(
    *,
    url: str,
    store: CustomerStore,
    bootstrap: str,
    names: TopicNames,
    valid: Sequence[dict[str, Any]],
    bad_count: int,
    published: int | None = None,
) -> Callable[[], int]:
    """A progress measure that reaches `DONE` once the pipeline has nothing left to do:
    every distinct interaction stored, every bad record dead-lettered and relayed to
    the DLQ topic, every read model at its stored version with no timer overdue — and,
    given ``published`` (the records sent to the current incarnation of
    `interactions`), the ingest's positions there add up to it: after a broker wipe
    upstream publishes again what the store already holds, and the ingest may still be
    reading those repeats when everything else is done."""
    keys = {(i["source"], i["event_id"]): i["customer_id"] for i in valid}
    per_customer = Counter(keys.values())
    read_models = ReadModelStore(store)
    watch = TopicWatch(bootstrap, [names.interactions_dlq])
    try:
        dlq = relay_position(DLQ_POSITION, incarnation_of(watch.ids()[names.interactions_dlq]))
    finally:
        watch.close()

    state: dict[str, Any] = {}

    def progress() -> int:
        try:
            return measure()
        except (psycopg.OperationalError, PersistenceError, KafkaError):
            return -2  # the database or broker is down, or a session was cut: no progress seen

    def measure() -> int:
        stored = count_rows(url, "SELECT count(*) FROM interaction_keys")
        dead = count_rows(url, "SELECT count(*) FROM dead_letters")
        last_dead = count_rows(url, "SELECT coalesce(max(id), 0) FROM dead_letters")
        applied = sum(m.applied_version for m in read_models.all() if m.customer_id in per_customer)
        wanted = len(keys) + len(per_customer)
        relayed = store.position(dlq) or 0
        overdue = len(read_models.due(datetime.now(UTC) - timedelta(seconds=3)))
        read = consumed(store, bootstrap, names) if published is not None else 0
        state.update(
            stored=(stored, len(keys)),
            dead_letters=(dead, bad_count),
            relayed=(relayed, last_dead),
            applied=(applied, wanted),
            overdue=overdue,
        )
        if published is not None:
            state["consumed"] = (read, published)
        finished = (
            stored == len(keys)
            and dead == bad_count
            and relayed == last_dead
            and applied == wanted
            and not overdue
            and (published is None or read == published)
        )
        return DONE if finished else stored + dead + applied + relayed + read

    progress.state = state  # type: ignore[attr-defined]
    return progress


DONE = -1
"""What a `settled` progress measure returns once the pipeline is done."""


def _brief(change: dict[str, Any]) -> dict[str, Any]:
    brief = {k: change.get(k) for k in ("customer_id", "from_value", "to_value", "effective_at")}
    brief["rules"] = [r.get("rule") for r in change.get("reasons", [])][:2]
    return brief


def count_rows(url: str, query: str) -> int:
    row = _rows(url, query)[0]
    return int(row[0])
