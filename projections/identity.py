"""Identity merges as the projections see them: which histories make one customer when.

Ops may say that two customer ids are one person (a merge) and later undo it (an
unmerge). Both are events on both customers' histories (kinds ``identity_merged`` and
``identity_unmerged``, facts ``survivor``, ``merged``, ``by``, ``reason``), so the
histories themselves stay immutable and the link has an instant like any other fact.

The answer for a customer at ``t`` is a function of the histories and ``t`` alone:

* not linked at ``t``: the fold of its own events, as if no merge had ever happened;
* the *survivor* of merges in force at ``t``: the fold of the union of its events and
  those of every customer merged into it, under its own id (one tier, stage, score and
  alert for the pair);
* *merged* into a survivor at ``t``: the survivor's answer, under its own id, with
  ``merged_into`` set and no alert of its own (the pair's one alert is the survivor's).

A merge is in force from its instant (inclusive) to the unmerge's (exclusive). The
adapters gather the histories (identity resolution is I/O); this module only folds.
Identity events never enter a fold, so merging and unmerging leaves the answers of both
customers exactly what they would be had the merge never been recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal

from projections.driver import fold, replay, snapshot
from projections.model import (
    OPS_KINDS,
    Change,
    ChangeKind,
    InputEvent,
    Reason,
    ReplayStep,
    Snapshot,
    StepSummary,
    to_micros,
)
from projections.policy import Policy
from projections.state import CustomerState

IDENTITY_MERGED: Final = "identity_merged"
IDENTITY_UNMERGED: Final = "identity_unmerged"
IDENTITY_KINDS: Final = frozenset({IDENTITY_MERGED, IDENTITY_UNMERGED})

Role = Literal["survivor", "merged"]


@dataclass(frozen=True, slots=True)
class Link:
    """One merge of ``merged`` into ``survivor``, in force over ``[start, end)``."""

    survivor: str
    merged: str
    start: datetime
    end: datetime | None
    merge: InputEvent
    unmerge: InputEvent | None

    def active(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def partner(self, customer_id: str) -> str:
        return self.merged if customer_id == self.survivor else self.survivor


def links(events: Iterable[InputEvent]) -> list[Link]:
    """The merges a customer's own history records, in time order (an unmerge closes
    the open merge of the same pair)."""
    found: list[Link] = []
    for event in sorted(
        (e for e in events if e.kind in IDENTITY_KINDS),
        key=lambda e: (e.occurred_at, e.version),
    ):
        survivor, merged = str(event.facts["survivor"]), str(event.facts["merged"])
        if event.kind == IDENTITY_MERGED:
            found.append(Link(survivor, merged, event.occurred_at, None, event, None))
            continue
        for index in range(len(found) - 1, -1, -1):
            link = found[index]
            if link.end is None and (link.survivor, link.merged) == (survivor, merged):
                found[index] = replace(link, end=event.occurred_at, unmerge=event)
                break
    return found


def partners(customer_id: str, events: Iterable[InputEvent]) -> set[str]:
    """Every customer a history was ever linked with: whose histories a fold may need."""
    return {link.partner(customer_id) for link in links(events)}


def linked(events: Iterable[InputEvent]) -> bool:
    """Was this history ever named by a merge? (Both sides record every link.)"""
    return any(e.kind in IDENTITY_KINDS for e in events)


def own(events: Iterable[InputEvent]) -> list[InputEvent]:
    """The events a fold takes from a history: all but the identity links."""
    return [e for e in events if e.kind not in IDENTITY_KINDS]


def union(
    survivor: Sequence[InputEvent], absorbed: Mapping[str, Sequence[InputEvent]]
) -> list[InputEvent]:
    """The survivor's events and those of the customers merged into it, as one history.

    Interaction ids are unique across customers (``source/event_id`` is the store's
    idempotency key); ops actions are numbered per customer, so a merged customer's are
    namespaced with its id."""
    events = own(survivor)
    for customer_id, history in sorted(absorbed.items()):
        events.extend(
            replace(e, event_id=f"{customer_id}/{e.event_id}") if e.kind in OPS_KINDS else e
            for e in own(history)
        )
    return events


@dataclass(frozen=True, slots=True)
class Configuration:
    """Who a customer is at an instant: alone, a survivor holding others, or merged."""

    role: Role | None
    survivor: str
    absorbed: tuple[str, ...] = ()


def configuration(customer_id: str, own_links: Sequence[Link], t: datetime) -> Configuration:
    active = [link for link in own_links if link.active(t)]
    for link in active:
        if link.merged == customer_id:
            return Configuration("merged", link.survivor)
    absorbed = tuple(sorted(link.merged for link in active if link.survivor == customer_id))
    return Configuration("survivor" if absorbed else None, customer_id, absorbed)


def group_state(
    customer_id: str,
    histories: Mapping[str, Sequence[InputEvent]],
    policy: Policy,
    *,
    as_of: datetime,
) -> tuple[Configuration, CustomerState]:
    """The fold that answers for ``customer_id`` at ``as_of``: its own, or its
    survivor's over the union (``histories`` holds the customer's and its partners')."""
    config = configuration(customer_id, links(histories[customer_id]), as_of)
    folded = config
    if config.role == "merged":
        folded = configuration(config.survivor, links(histories[config.survivor]), as_of)
    return config, fold(config.survivor, _events(folded, histories), policy, as_of=as_of)


def view(
    customer_id: str,
    histories: Mapping[str, Sequence[InputEvent]],
    policy: Policy,
    *,
    as_of: datetime,
) -> Snapshot:
    """The snapshot of ``customer_id`` at ``as_of``, merges applied."""
    config, state = group_state(customer_id, histories, policy, as_of=as_of)
    return as_member(customer_id, config, snapshot(state))


def as_member(customer_id: str, config: Configuration, survivor: Snapshot) -> Snapshot:
    """The merged customer's view of its survivor's snapshot (its own id, no alert);
    the snapshot unchanged for anyone else."""
    if config.role != "merged":
        return survivor
    return replace(
        survivor,
        customer_id=customer_id,
        alert_state="none",
        alert_id=None,
        alert_open=False,
        merged_into=config.survivor,
    )


def _events(
    config: Configuration, histories: Mapping[str, Sequence[InputEvent]]
) -> list[InputEvent]:
    if config.role is None:
        return own(histories[config.survivor])
    return union(histories[config.survivor], {m: histories[m] for m in config.absorbed})


def identity_replay(
    customer_id: str,
    histories: Mapping[str, Sequence[InputEvent]],
    policy: Policy,
    *,
    as_of: datetime,
) -> list[ReplayStep]:
    """The audited fold across merges: each configuration's own steps while it holds,
    and at each merge and unmerge a step of that kind whose summary is the answer from
    then on and whose changes (with the link's ``by`` and ``reason``) say what moved."""
    own_links = links(histories[customer_id])
    edges: list[tuple[datetime, InputEvent]] = []
    for link in own_links:
        edges.append((link.start, link.merge))
        if link.end is not None and link.unmerge is not None:
            edges.append((link.end, link.unmerge))
    edges = sorted((e for e in edges if e[0] <= as_of), key=lambda e: (e[0], e[1].version))
    if not edges:
        return replay(customer_id, own(histories[customer_id]), policy, as_of=as_of)
    steps: list[ReplayStep] = []
    start: datetime | None = None
    for index in range(len(edges) + 1):
        end = edges[index][0] if index < len(edges) else as_of
        config = configuration(customer_id, own_links, start or end)
        if start is None or start < end or index == len(edges):
            steps.extend(
                _segment(customer_id, config, histories, policy, start=start, end=end,
                         last=index == len(edges))
            )  # fmt: skip
        if index < len(edges):
            at, event = edges[index]
            before = view(customer_id, _before(histories, customer_id, event), policy, as_of=at)
            after = view(customer_id, histories, policy, as_of=at)
            steps.append(
                ReplayStep(at, event.event_id, event.kind, summary_of(after),
                           tuple(identity_changes(before, after, event)),
                           link_reason(event, after.policy_version))
            )  # fmt: skip
            start = at
    return steps


def _before(
    histories: Mapping[str, Sequence[InputEvent]], customer_id: str, edge: InputEvent
) -> dict[str, list[InputEvent]]:
    """The histories without the link event ``edge`` (and its twin on the partner's
    history): the answer just before the link took effect."""
    at = edge.occurred_at
    return {
        c: [e for e in events if not (e.kind == edge.kind and e.occurred_at == at
                                      and e.facts.get("merged") == edge.facts.get("merged"))]
        for c, events in histories.items()
    }  # fmt: skip


def _segment(
    customer_id: str,
    config: Configuration,
    histories: Mapping[str, Sequence[InputEvent]],
    policy: Policy,
    *,
    start: datetime | None,
    end: datetime,
    last: bool,
) -> list[ReplayStep]:
    """The steps of one configuration strictly after ``start`` and before ``end`` (up
    to and including ``end`` for the last segment, which ends at ``as_of``)."""
    if config.role == "merged":
        return []
    steps = replay(config.survivor, _events(config, histories), policy, as_of=end)
    low = -1 if start is None else to_micros(start)
    high = to_micros(end)
    kept = [
        s
        for s in steps
        if to_micros(s.at) > low and (to_micros(s.at) < high or (last and s.kind != "as_of"))
    ]
    if last and (not kept or kept[-1].at < end) and steps and steps[-1].kind == "as_of":
        kept.append(steps[-1])
    return kept


def summary_of(view_: Snapshot) -> StepSummary:
    return StepSummary(
        view_.tier,
        view_.lifecycle_stage,
        view_.stage_entered_at,
        view_.churn_score,
        view_.churn_level,
        view_.alert_state,
        view_.alert_id,
        view_.alert_open,
        view_.net_revenue_base,
        view_.purchase_count,
        view_.window_purchase_count,
    )


def link_reason(event: InputEvent, policy_version: str) -> Reason:
    """The reason a merge or unmerge (or a refold of a merged group) gives its step and
    changes: who linked whom, and why, as recorded."""
    if event.kind in IDENTITY_KINDS:
        message = (
            f"{event.facts.get('merged')} {event.kind.removeprefix('identity_')} "
            f"{'into' if event.kind == IDENTITY_MERGED else 'from'} "
            f"{event.facts.get('survivor')} by {event.facts.get('by')}: "
            f"{event.facts.get('reason')}"
        )
    else:
        message = "an event of a merged customer refolded its identity group"
    return Reason(
        rule=f"identity.{event.kind.removeprefix('identity_')}",
        message=message,
        policy_version=policy_version,
        inputs=dict(event.facts),
        event_ids=(event.event_id,),
    )


def identity_changes(before: Snapshot, after: Snapshot, event: InputEvent) -> list[Change]:
    """What a merge or unmerge moved for one customer, as changes at its instant, each
    carrying the link (who, why) as its reason."""
    reason = link_reason(event, after.policy_version)
    pairs: list[tuple[ChangeKind, str, str]] = [
        ("tier", before.tier, after.tier),
        ("lifecycle", before.lifecycle_stage, after.lifecycle_stage),
    ]
    changes = [
        Change(after.customer_id, kind, old, new, event.occurred_at, (reason,),
               after.policy_version, (event.event_id,))
        for kind, old, new in pairs
        if old != new
    ]  # fmt: skip
    if (before.alert_state, before.alert_id) != (after.alert_state, after.alert_id):
        changes.append(
            Change(after.customer_id, "alert", before.alert_state, after.alert_state,
                   event.occurred_at, (reason,), after.policy_version, (event.event_id,),
                   after.alert_id or before.alert_id)
        )  # fmt: skip
    return changes
