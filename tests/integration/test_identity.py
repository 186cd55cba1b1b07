"""Identity merge and unmerge through the real store (PostgreSQL): both histories
record the link, the projections fold the union while it holds, and undoing it gives
back byte-identical answers; `verify`'s audit and `rebuild` resolve links the same way."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from adapters.identitycli import link
from adapters.readmodels import ReadModelStore, audit, rebuilt_rows
from adapters.readside import ProjectionReader
from adapters.store import CustomerStore
from domain.customer import InvalidIdentityLinkError
from domain.errors import UsageError
from infra.bootstrap import load_configured_policy
from projections import fold, snapshot
from projections.identity import own
from tests.conftest import StoreFactory, settings_for

pytestmark = pytest.mark.integration

MERGE_AT = datetime(2026, 1, 10, tzinfo=UTC)
UNMERGE_AT = datetime(2026, 2, 10, tzinfo=UTC)
END = datetime(2026, 3, 1, tzinfo=UTC)


def purchase(customer: str, n: int, when: datetime, amount: str = "300.00") -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "source": "shop",
        "customer_id": customer,
        "kind": "purchase",
        "occurred_at": when.isoformat(),
        "amount": amount,
        "currency": "EUR",
        "order_id": f"{customer}-o{n}",
    }


def seed(store: CustomerStore, survivor: str, merged: str) -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    store.record([purchase(survivor, n, start + timedelta(days=20 * n)) for n in range(3)])
    store.record(
        [purchase(merged, n, start + timedelta(days=7 + 15 * n), "450.00") for n in range(6)]
    )


class Runtime:
    def __init__(self, store: CustomerStore, reader: ProjectionReader) -> None:
        self.store, self.reader = store, reader

    def clock(self) -> datetime:
        return self.store.clock()


def at(instant: datetime) -> Any:
    return lambda: instant


@pytest.fixture
def linked(
    fresh_database_url: str, make_store: StoreFactory
) -> tuple[CustomerStore, ProjectionReader, str, str]:
    store = make_store(fresh_database_url)
    policy = load_configured_policy(settings_for(fresh_database_url))
    suffix = uuid.uuid4().hex[:6]
    survivor, merged = f"s-{suffix}", f"m-{suffix}"
    seed(store, survivor, merged)
    return store, ProjectionReader(store, policy), survivor, merged


def as_bytes(reader: ProjectionReader, customer: str, t: datetime) -> bytes:
    return orjson.dumps(reader.customer(customer, as_of=t).to_dict())


def test_merge_then_unmerge_through_the_store_gives_back_byte_identical_projections(
    linked: tuple[CustomerStore, ProjectionReader, str, str],
) -> None:
    store, reader, s, m = linked
    before = {c: as_bytes(reader, c, END) for c in (s, m)}
    separate = {c: reader.customer(c, as_of=MERGE_AT - timedelta(days=1)) for c in (s, m)}

    store.clock = at(MERGE_AT)
    result = link(Runtime(store, reader), "merged", s, m, by="kim", reason="same e-mail")
    assert result["versions"] == {s: 5, m: 8}
    store.clock = at(MERGE_AT + timedelta(days=3))
    late = purchase(m, 99, MERGE_AT - timedelta(days=2), "900.00")  # dated before the merge
    assert store.record([late])[0].status == "recorded"

    during = MERGE_AT + timedelta(days=5)
    union = reader.customer(s, as_of=during)
    absorbed = reader.customer(m, as_of=during)
    assert union.purchase_count == 3 + 6 + 1
    assert absorbed.merged_into == s
    assert (absorbed.alert_open, absorbed.alert_id) == (False, None)
    assert (absorbed.tier, absorbed.net_revenue_base) == (union.tier, union.net_revenue_base)
    # as of before the merge: the separate answers
    for c in (s, m):
        assert reader.customer(c, as_of=MERGE_AT - timedelta(days=1)).purchase_count == (
            separate[c].purchase_count + (1 if c == m else 0)
        )

    store.clock = at(UNMERGE_AT)
    link(Runtime(store, reader), "unmerged", s, m, by="lee", reason="two people after all")
    after = {c: as_bytes(reader, c, END) for c in (s, m)}
    assert after[s] == before[s]
    expected_m = orjson.loads(before[m])
    assert orjson.loads(after[m])["purchase_count"] == expected_m["purchase_count"] + 1

    steps = reader.replay(s, as_of=END)
    identity = [step for step in steps if step.kind.startswith("identity_")]
    assert [step.kind for step in identity] == ["identity_merged", "identity_unmerged"]
    assert [step.at for step in identity] == [MERGE_AT, UNMERGE_AT]
    reasons = [r.message for step in identity for c in step.changes for r in c.reasons]
    assert any("same e-mail" in r for r in reasons)
    assert any("two people after all" in r for r in reasons)
    history = [e.state.get("action") for e in store.history(s)]
    assert history[-2:] == ["merged", "unmerged"]


def test_a_merge_is_refused_with_a_code_when_it_cannot_hold(
    linked: tuple[CustomerStore, ProjectionReader, str, str],
) -> None:
    store, reader, s, m = linked
    runtime = Runtime(store, reader)
    third = f"t-{uuid.uuid4().hex[:6]}"
    store.record([purchase(third, 1, datetime(2025, 9, 1, tzinfo=UTC))])

    def refused(action: str, survivor: str, merged: str) -> str:
        with pytest.raises(UsageError) as caught:
            link(runtime, action, survivor, merged, by="kim", reason="test")  # type: ignore[arg-type]
        return caught.value.code

    assert refused("merged", s, s) == "merge_into_itself"
    assert refused("merged", s, "nobody-" + s) == "unknown_customer"
    assert refused("unmerged", s, m) == "not_merged"
    link(runtime, "merged", s, m, by="kim", reason="same person")
    assert refused("merged", third, m) == "already_merged"
    assert refused("merged", m, third) == "merge_chain"
    assert refused("merged", third, s) == "merge_chain"
    assert refused("unmerged", m, s) == "not_merged"
    with pytest.raises(InvalidIdentityLinkError):
        store.record_identity_link("merged", s, third, by="kim", reason=" ")


def test_rebuild_and_the_audit_resolve_links_as_the_reader_does(
    linked: tuple[CustomerStore, ProjectionReader, str, str],
) -> None:
    store, reader, s, m = linked
    store.clock = at(MERGE_AT)
    link(Runtime(store, reader), "merged", s, m, by="kim", reason="same e-mail")
    read_models = ReadModelStore(store)
    read_models.replace(rebuilt_rows(store, reader.policy, as_of=END))
    found = audit(read_models, store, reader.policy)
    assert found.differences == []
    row = read_models.get(m)
    assert row is not None
    assert row.snapshot["merged_into"] == s
    assert row.next_deadline is None
    survivor = read_models.get(s)
    assert survivor is not None
    assert survivor.snapshot["purchase_count"] == 9
    # negative control: the survivor's read model folded without the link is caught
    alone = snapshot(fold(s, own(reader.events(s)), reader.policy, as_of=END))
    read_models.replace(
        replace(r, snapshot=alone) if r.customer_id == s else r
        for r in rebuilt_rows(store, reader.policy, as_of=END)
    )
    assert {d.customer_id for d in audit(read_models, store, reader.policy).differences} == {s}


def test_the_merge_and_unmerge_commands_record_and_refuse_with_codes(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    from tests.integration.test_cli import run  # noqa: PLC0415

    store = make_store(fresh_database_url)
    seed(store, "cli-s", "cli-m")
    url = fresh_database_url
    merged = orjson.loads(
        run(url, "merge", "cli-s", "cli-m", "--by", "kim", "--reason", "same", "--json").stdout
    )
    assert merged["customers"]["cli-m"]["merged_into"] == "cli-s"
    shown = run(url, "customer", "cli-m").stdout
    assert "merged into cli-s" in shown
    exported = {r["customer_id"]: r for r in csv.DictReader(io.StringIO(run(url, "export").stdout))}
    assert (exported["cli-m"]["merged_into"], exported["cli-s"]["merged_into"]) == ("cli-s", "")
    ack = run(url, "alerts", "ack", "cli-m", "--by", "kim", check=False)
    assert "merged into cli-s" in ack.stderr
    again = run(url, "merge", "cli-s", "cli-m", "--by", "kim", "--reason", "x", check=False)
    assert again.returncode == 2
    assert "[already_merged]" in again.stderr
    assert "Traceback" not in again.stderr
    self_merge = run(url, "merge", "cli-s", "cli-s", "--by", "k", "--reason", "x", check=False)
    assert (self_merge.returncode, "[merge_into_itself]" in self_merge.stderr) == (2, True)
    text = run(url, "unmerge", "cli-s", "cli-m", "--by", "lee", "--reason", "two people").stdout
    assert "cli-m unmerged from cli-s by lee: two people" in text
    replayed = orjson.loads(run(url, "replay", "cli-s", "--json").stdout)
    notes = [s["reason"]["message"] for s in replayed["steps"] if "reason" in s]
    assert notes == [
        "cli-m merged into cli-s by kim: same",
        "cli-m unmerged from cli-s by lee: two people",
    ]
    not_merged = run(url, "unmerge", "cli-s", "cli-m", "--by", "k", "--reason", "x", check=False)
    assert (not_merged.returncode, "[not_merged]" in not_merged.stderr) == (2, True)


def test_forgetting_a_merged_customer_erases_the_pair_and_an_unmerged_one_alone(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    from tests.integration.test_cli import run  # noqa: PLC0415

    store = make_store(fresh_database_url)
    seed(store, "er-s", "er-m")
    seed(store, "lone-s", "lone-m")
    url = fresh_database_url
    run(url, "merge", "er-s", "er-m", "--by", "kim", "--reason", "same person")
    run(url, "merge", "lone-s", "lone-m", "--by", "kim", "--reason", "same person")
    run(url, "unmerge", "lone-s", "lone-m", "--by", "kim", "--reason", "two people")
    args = ("--by", "dpo", "--reason", "art. 17 request", "--json")
    erased = orjson.loads(run(url, "forget", "er-m", *args).stdout)
    assert erased["customer_id"] == "er-m"
    assert [r["customer_id"] for r in erased["merged_erased"]] == ["er-s"]
    alone = orjson.loads(run(url, "forget", "lone-m", *args).stdout)
    assert alone["merged_erased"] == []
    receipts = orjson.loads(run(url, "erasures", "--json").stdout)
    ids = sorted(r["customer_id"] for r in receipts)
    assert ids == ["er-m", "er-s", "lone-m"]
