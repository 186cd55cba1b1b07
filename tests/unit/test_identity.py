"""Identity merges in the pure fold: the union while merged, the separate answers
outside, and nothing left behind by a merge that was undone."""

from __future__ import annotations

import random
from datetime import datetime

import orjson
import pytest

from infra.bootstrap import default_policy_text
from projections import InputEvent, fold, load_policy, snapshot
from projections.identity import identity_replay, links, view
from tests.unit.quality.simulate import at, event

POLICY = load_policy(default_policy_text())
MERGE_DAY, UNMERGE_DAY = 200.0, 260.0


def link_event(
    kind: str, day: float, version: int, survivor: str = "s", merged: str = "m"
) -> InputEvent:
    return event(
        f"identity/v{version}", f"identity_{kind}", day, version=version,
        survivor=survivor, merged=merged, by="kim", reason=f"{kind} because same email",
    )  # fmt: skip


def purchases(prefix: str, days: list[float], amount: str = "400.00") -> list[InputEvent]:
    return [
        event(f"{prefix}/p{n}", "purchase", day, amount=amount, currency="EUR",
              order_id=f"{prefix}{n}")
        for n, day in enumerate(days)
    ]  # fmt: skip


SURVIVOR = [
    *purchases("shop", [10, 40, 70]),
    event("ops/v9", "alert_acknowledged", 120, alert_id="alert-x", by="kim", reason=""),
]
MERGED = [
    *purchases("web", [20, 50, 80, 110, 150, 190]),
    event("web/c1", "complaint", 185),
    event("ops/v9", "alert_resolved", 186, alert_id="alert-y", by="kim", reason=""),
]


def histories(*, merge: bool = True, unmerge: bool = True) -> dict[str, list[InputEvent]]:
    s, m = list(SURVIVOR), list(MERGED)
    if merge:
        s.append(link_event("merged", MERGE_DAY, 50))
        m.append(link_event("merged", MERGE_DAY, 60))
    if unmerge:
        s.append(link_event("unmerged", UNMERGE_DAY, 51))
        m.append(link_event("unmerged", UNMERGE_DAY, 61))
    return {"s": s, "m": m}


def as_bytes(customer: str, hist: dict[str, list[InputEvent]], t: datetime) -> bytes:
    return orjson.dumps(view(customer, hist, POLICY, as_of=t).to_dict())


@pytest.mark.parametrize("day", [5.0, 150.0, 199.0, 260.0, 300.0, 700.0])
@pytest.mark.parametrize("customer", ["s", "m"])
def test_merging_then_unmerging_leaves_byte_identical_projections(
    customer: str, day: float
) -> None:
    before_or_after = as_bytes(customer, histories(), at(day))
    never = as_bytes(customer, histories(merge=False, unmerge=False), at(day))
    assert before_or_after == never


def test_as_of_before_the_merge_gives_the_separate_answers() -> None:
    t = at(MERGE_DAY - 1)
    alone = snapshot(fold("s", SURVIVOR, POLICY, as_of=t))
    assert view("s", histories(), POLICY, as_of=t) == alone
    assert view("m", histories(), POLICY, as_of=t).merged_into is None


def test_while_merged_the_survivor_folds_both_histories_and_holds_the_one_alert() -> None:
    t = at(MERGE_DAY + 10)
    survivor = view("s", histories(), POLICY, as_of=t)
    merged = view("m", histories(), POLICY, as_of=t)
    alone = snapshot(fold("s", SURVIVOR, POLICY, as_of=t))
    assert survivor.purchase_count == 9 != alone.purchase_count
    assert survivor.net_revenue_base > alone.net_revenue_base
    assert merged.merged_into == "s"
    assert merged.customer_id == "m"
    assert (merged.alert_open, merged.alert_id) == (False, None)
    assert (merged.tier, merged.purchase_count) == (survivor.tier, survivor.purchase_count)
    assert survivor.merged_into is None


def test_merged_customers_ops_ids_do_not_collide_with_the_survivors() -> None:
    t = at(MERGE_DAY + 10)
    survivor = view("s", histories(), POLICY, as_of=t)
    # both histories carry an event numbered ops/v9; both count in the union
    assert survivor.event_count == len(SURVIVOR) + len(MERGED)


@pytest.mark.parametrize("seed", range(8))
def test_merge_is_order_robust_with_late_events_dated_before_it(seed: int) -> None:
    late = purchases("late", [195, 199.5], amount="900.00")
    rng = random.Random(seed)
    base = histories(unmerge=False)
    shuffled = {c: rng.sample(events, len(events)) for c, events in base.items()}
    shuffled["m"] = [*shuffled["m"], *late]
    rng.shuffle(shuffled["m"])
    reference = {"s": base["s"], "m": [*base["m"], *late]}
    for day in (199.9, MERGE_DAY, 230.0):
        assert as_bytes("s", shuffled, at(day)) == as_bytes("s", reference, at(day))
        assert as_bytes("m", shuffled, at(day)) == as_bytes("m", reference, at(day))
    merged_view = view("s", reference, POLICY, as_of=at(230))
    assert merged_view.purchase_count == 11


def test_replay_shows_the_merge_and_the_unmerge_as_steps_with_their_reasons() -> None:
    steps = identity_replay("s", histories(), POLICY, as_of=at(300))
    kinds = [s.kind for s in steps]
    assert "identity_merged" in kinds
    assert "identity_unmerged" in kinds
    merge = steps[kinds.index("identity_merged")]
    unmerge = steps[kinds.index("identity_unmerged")]
    assert merge.at == at(MERGE_DAY)
    assert unmerge.at == at(UNMERGE_DAY)
    assert merge.note is not None
    assert "by kim: merged because same email" in merge.note.message
    assert merge.to_dict()["reason"]["rule"] == "identity.merged"
    assert merge.summary.purchase_count == 9
    assert unmerge.summary.purchase_count == 3
    assert all(s.at <= merge.at for s in steps[: kinds.index("identity_merged")])
    assert any(c.kind == "tier" for c in merge.changes)
    assert all("merged because same email" in c.reasons[0].message for c in merge.changes)
    assert steps[-1].summary == view_summary("s", at(300))


def view_summary(customer: str, t: datetime) -> object:
    from projections.identity import summary_of  # noqa: PLC0415

    return summary_of(view(customer, histories(), POLICY, as_of=t))


def test_replay_as_of_before_the_merge_equals_the_plain_replay() -> None:
    from projections import replay  # noqa: PLC0415

    t = at(MERGE_DAY - 1)
    assert identity_replay("s", histories(), POLICY, as_of=t) == replay(
        "s", SURVIVOR, POLICY, as_of=t
    )


def test_an_unmerge_closes_only_its_own_pair() -> None:
    events = [link_event("merged", 1, 2), link_event("unmerged", 2, 3), link_event("merged", 3, 4)]
    found = links(events)
    assert [(lk.start, lk.end) for lk in found] == [(at(1), at(2)), (at(3), None)]


def test_a_member_of_a_survivor_holding_two_shows_the_union_of_all_three() -> None:
    hist = histories(unmerge=False)
    other = purchases("app", [30, 60])
    hist["o"] = [*other, link_event("merged", MERGE_DAY + 5, 70, merged="o")]
    hist["s"] = [*hist["s"], link_event("merged", MERGE_DAY + 5, 52, merged="o")]
    t = at(MERGE_DAY + 10)
    survivor = view("s", hist, POLICY, as_of=t)
    assert survivor.purchase_count == 3 + 6 + 2
    assert view("m", hist, POLICY, as_of=t).purchase_count == survivor.purchase_count
    assert view("o", hist, POLICY, as_of=t).merged_into == "s"
