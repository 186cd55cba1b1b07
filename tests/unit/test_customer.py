"""The Customer aggregate's behaviour, in memory."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from domain.customer import (
    Customer,
    InvalidAlertActionError,
    WrongCustomerError,
    customer_uuid,
    interaction_fields,
)
from domain.interactions import parse_interaction

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def interaction(customer: str, occurred_at: str, event_id: str = "e-1") -> object:
    return parse_interaction(
        {
            "event_id": event_id,
            "source": "shop",
            "customer_id": customer,
            "kind": "purchase",
            "occurred_at": occurred_at,
            "amount": "10.5",
            "currency": "EUR",
        },
        now=NOW,
        max_future_skew=timedelta(minutes=5),
    )


def test_a_customer_id_maps_to_the_same_aggregate_id_everywhere() -> None:
    assert customer_uuid("c-1") == customer_uuid("c-1") == Customer.create_id("c-1")
    assert customer_uuid("c-1") != customer_uuid("c-2")


def test_recording_appends_one_event_with_the_interaction_facts() -> None:
    customer = Customer("c-1", timestamp=NOW)
    customer.record(interaction("c-1", "2025-05-01T12:00:00+02:00"), digest="d", at=NOW)  # type: ignore[arg-type]

    created, recorded = customer.collect_events()
    assert isinstance(created, Customer.Created)
    assert isinstance(recorded, Customer.InteractionRecorded)
    assert recorded.originator_version == 2
    assert recorded.kind == "purchase"  # type: ignore[attr-defined]
    assert str(recorded.amount) == "10.50"  # type: ignore[attr-defined]
    assert recorded.occurred_at == datetime(2025, 5, 1, 10, tzinfo=UTC)  # type: ignore[attr-defined]
    assert customer.interaction_count == 1


def test_events_are_recorded_at_the_instant_the_writer_gives_not_a_clock_of_their_own() -> None:
    customer = Customer("c-1", timestamp=NOW)
    later = NOW + timedelta(seconds=5)
    customer.record(interaction("c-1", "2025-05-01T00:00:00Z"), digest="d", at=later)  # type: ignore[arg-type]
    customer.act_on_alert(
        action="acknowledged", alert_id="a-1", by="kim", reason="", until=None, at=AT
    )
    customer.forget(by="dpo", reason="request", at=AT + timedelta(days=1))
    assert [e.timestamp for e in customer.collect_events()] == [
        NOW,
        later,
        AT,
        AT + timedelta(days=1),
    ]


def test_a_deep_copy_is_independent_of_the_cached_customer() -> None:
    cached = Customer("c-1", timestamp=NOW)
    cached.record(interaction("c-1", "2025-05-01T00:00:00Z", "e-1"), digest="a", at=NOW)  # type: ignore[arg-type]
    pending = list(cached.collect_events()[-1:])
    cached.record(interaction("c-1", "2025-05-02T00:00:00Z", "e-2"), digest="b", at=NOW)  # type: ignore[arg-type]

    copied = copy.deepcopy(cached)
    assert copied.__dict__.keys() == cached.__dict__.keys()
    copied.record(interaction("c-1", "2025-05-03T00:00:00Z", "e-3"), digest="c", at=NOW)  # type: ignore[arg-type]

    assert (cached.version, cached.interaction_count) == (3, 2)
    assert (copied.version, copied.interaction_count) == (4, 3)
    assert [e.originator_version for e in cached.collect_events()] == [3]
    assert [e.originator_version for e in copied.collect_events()] == [3, 4]
    assert pending[0].originator_version == 2


def test_the_latest_occurrence_is_kept_whatever_the_arrival_order() -> None:
    customer = Customer("c-1", timestamp=NOW)
    customer.record(interaction("c-1", "2025-05-02T00:00:00Z", "e-1"), digest="a", at=NOW)  # type: ignore[arg-type]
    customer.record(interaction("c-1", "2025-05-01T00:00:00Z", "e-2"), digest="b", at=NOW)  # type: ignore[arg-type]
    assert customer.last_occurred_at == datetime(2025, 5, 2, tzinfo=UTC)


def test_an_interaction_of_another_customer_is_refused() -> None:
    with pytest.raises(WrongCustomerError):
        Customer("c-1", timestamp=NOW).record(
            interaction("c-2", "2025-05-01T00:00:00Z"), digest="d", at=NOW
        )  # type: ignore[arg-type]


def test_the_event_fields_are_exactly_what_the_fast_path_stores() -> None:
    customer = Customer("c-1", timestamp=NOW)
    item = interaction("c-1", "2025-05-01T00:00:00Z")
    customer.record(item, digest="d", at=NOW)  # type: ignore[arg-type]
    recorded = customer.collect_events()[1]
    state = {
        k: v
        for k, v in vars(recorded).items()
        if k not in {"originator_id", "originator_version", "timestamp"}
    }
    assert state == interaction_fields(item, "d")  # type: ignore[arg-type]


AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "alert_id", "by", "until", "message"),
    [
        ("archived", "a-1", "ops", None, "action must be one of"),
        ("acknowledged", "", "ops", None, "alert_id"),
        ("acknowledged", "a-1", " ", None, "by"),
        ("snoozed", "a-1", "ops", None, "snooze needs"),
        ("snoozed", "a-1", "ops", AT - timedelta(hours=1), "snooze needs"),
        ("resolved", "a-1", "ops", AT + timedelta(days=1), "only a snooze"),
    ],
)
def test_an_invalid_ops_action_is_refused(
    action: str, alert_id: str, by: str, until: datetime | None, message: str
) -> None:
    customer = Customer("c-1", timestamp=NOW)
    with pytest.raises(InvalidAlertActionError, match=message):
        customer.act_on_alert(
            action=action, alert_id=alert_id, by=by, reason="", until=until, at=AT
        )


def test_an_ops_action_is_recorded_as_an_event_with_its_instant() -> None:
    customer = Customer("c-1", timestamp=NOW)
    customer.act_on_alert(
        action="snoozed",
        alert_id="a-1",
        by="kim",
        reason="on holiday",
        until=AT + timedelta(days=7),
        at=AT,
    )
    recorded = customer.collect_events()[-1]
    assert isinstance(recorded, Customer.AlertActionRecorded)
    assert (recorded.action, recorded.until, recorded.occurred_at) == (  # type: ignore[attr-defined]
        "snoozed",
        AT + timedelta(days=7),
        AT,
    )
