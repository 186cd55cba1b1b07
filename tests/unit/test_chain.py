"""The hash chain: deterministic, sensitive to every input, order-dependent."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.chain import GENESIS, link
from adapters.recorder import BrokenChainError, chain_hashes

CUSTOMER = uuid.UUID("00000000-0000-4000-8000-000000000001")
TOPIC = "domain.customer:Customer.InteractionRecorded"


def test_the_same_inputs_give_the_same_link() -> None:
    assert link(GENESIS, CUSTOMER, 1, TOPIC, b"state") == link(
        GENESIS, CUSTOMER, 1, TOPIC, b"state"
    )


@pytest.mark.parametrize(
    "changed",
    [
        (b"\x01" * 32, CUSTOMER, 1, TOPIC, b"state"),
        (GENESIS, uuid.uuid4(), 1, TOPIC, b"state"),
        (GENESIS, CUSTOMER, 2, TOPIC, b"state"),
        (GENESIS, CUSTOMER, 1, TOPIC + "X", b"state"),
        (GENESIS, CUSTOMER, 1, TOPIC, b"statf"),
    ],
)
def test_changing_any_input_changes_the_link(
    changed: tuple[bytes, uuid.UUID, int, str, bytes],
) -> None:
    assert link(*changed) != link(GENESIS, CUSTOMER, 1, TOPIC, b"state")


def test_topic_and_state_boundaries_cannot_be_shifted() -> None:
    # The topic is length-prefixed, so moving bytes between topic and state changes the hash.
    assert link(GENESIS, CUSTOMER, 1, "ab", b"c") != link(GENESIS, CUSTOMER, 1, "a", b"bc")


def test_a_batch_continues_each_customers_chain_from_its_stored_head() -> None:
    other = uuid.uuid4()
    events = [
        StoredEvent(CUSTOMER, 3, TOPIC, b"c3"),
        StoredEvent(other, 1, TOPIC, b"o1"),
        StoredEvent(CUSTOMER, 4, TOPIC, b"c4"),
    ]
    head = b"\x07" * 32
    hashes = chain_hashes(events, {CUSTOMER: head})

    c3 = link(head, CUSTOMER, 3, TOPIC, b"c3")
    assert hashes == [
        c3,
        link(GENESIS, other, 1, TOPIC, b"o1"),
        link(c3, CUSTOMER, 4, TOPIC, b"c4"),
    ]


def test_a_missing_predecessor_is_a_broken_chain_not_a_silent_restart() -> None:
    with pytest.raises(BrokenChainError):
        chain_hashes([StoredEvent(CUSTOMER, 5, TOPIC, b"x")], {})
