"""Pure parts of the auditor's tools: the checkpoint's Merkle root, late arrivals."""

from __future__ import annotations

from datetime import UTC, datetime
from hashlib import sha256

from adapters.checkpoint import Head, merkle_root
from adapters.readside import arrivals
from projections import InputEvent


def _h(data: bytes) -> bytes:
    return sha256(data).digest()


def test_the_merkle_root_pairs_nodes_and_carries_an_odd_one_up() -> None:
    a, b, c = _h(b"a"), _h(b"b"), _h(b"c")
    assert merkle_root([]) == _h(b"")
    assert merkle_root([a]) == a
    ab = _h(b"\x01" + a + b)
    assert merkle_root([a, b]) == ab
    assert merkle_root([a, b, c]) == _h(b"\x01" + ab + c)


def test_every_head_field_changes_the_root() -> None:
    heads = [Head(f"c-{n}", n + 1, _h(bytes([n]))) for n in range(5)]
    root = merkle_root([h.leaf() for h in heads])
    variants = [
        Head("c-x", 1, heads[0].chain_hash),
        Head("c-0", 2, heads[0].chain_hash),
        Head("c-0", 1, _h(b"other")),
    ]
    for variant in variants:
        assert merkle_root([variant.leaf(), *(h.leaf() for h in heads[1:])]) != root
    assert merkle_root([h.leaf() for h in heads[:-1]]) != root


def _event(name: str, month: int) -> InputEvent:
    return InputEvent(
        event_id=name,
        version=month,
        kind="purchase",
        occurred_at=datetime(2025, month, 1, tzinfo=UTC),
    )


def test_an_event_is_late_when_a_later_one_was_recorded_before_it() -> None:
    first = datetime(2025, 6, 1, tzinfo=UTC)
    later = datetime(2025, 7, 1, tzinfo=UTC)
    timed = [
        (_event("jan", 1), first),
        (_event("may", 5), first),  # same write as jan: not late for each other
        (_event("mar", 3), later),  # after may was recorded: late
        (_event("jun", 6), later),
    ]
    found = {name: arrival.late for name, arrival in arrivals(timed).items()}
    assert found == {"jan": False, "may": False, "mar": True, "jun": False}
    assert arrivals(timed)["mar"].recorded_at == later
