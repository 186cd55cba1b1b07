"""Wire decoding codes and the stored-state transcoder."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from adapters import pgcopy
from adapters.codec import MAX_WIRE_BYTES, StateTranscoder, decode_wire
from domain.errors import InvalidInteraction


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b'{"a": "\xff"}', "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"[" * 2000 + b"]" * 2000, "too_deep"),
        (b'{"a": "' + b"x" * MAX_WIRE_BYTES + b'"}', "oversize"),
    ],
)
def test_undecodable_messages_are_rejected_with_their_code(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInteraction) as caught:
        decode_wire(data)
    assert caught.value.first.code == code


def test_a_json_object_decodes() -> None:
    assert decode_wire(b'{"kind": "login"}') == {"kind": "login"}


def test_state_round_trips_with_its_typed_fields() -> None:
    transcoder = StateTranscoder()
    state = {
        "timestamp": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "occurred_at": datetime(2024, 12, 31, 23, 0, tzinfo=UTC),
        "amount": Decimal("19.90"),
        "personal": b"\x01\x02ciphertext",
        "facts": {"order_id": "o-1", "amount": "not a decimal here"},
        "kind": "purchase",
    }
    assert transcoder.decode(transcoder.encode(state)) == state


def test_encoding_is_independent_of_key_order() -> None:
    transcoder = StateTranscoder()
    assert transcoder.encode({"b": 1, "a": 2}) == transcoder.encode({"a": 2, "b": 1})


def test_binary_copy_buffers_have_header_rows_and_trailer() -> None:
    data = pgcopy.events([(uuid4(), 1, pgcopy.event_body("t", b"s"), b"h" * 32)])
    assert data.startswith(pgcopy.HEADER)
    assert data.endswith(pgcopy.TRAILER)
    assert (
        len(data) == len(pgcopy.HEADER) + 2 + (4 + 16) + (4 + 8) + (4 + 1) + (4 + 1) + (4 + 32) + 2
    )
