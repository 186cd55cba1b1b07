"""PostgreSQL's binary COPY format for the two row shapes the bulk import writes.

psycopg's `Copy.write_row` adapts each value through Python dumpers (~4 µs a row);
packing rows with `struct` and writing one buffer per batch is several times faster
and is all the fast path needs. Format: PostgreSQL docs, "COPY … Binary Format".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from uuid import UUID

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_EVENT_HEAD = struct.Struct(">hi16siq")  # 5 fields; uuid; int8 version
_HASH_FIELD = struct.pack(">i", 32)
_LENGTH = struct.Struct(">i")


def event_body(topic: str, state: bytes) -> bytes:
    """The topic and state fields of an events row, packed ahead of time (in a worker)."""
    encoded = topic.encode()
    return b"".join((_LENGTH.pack(len(encoded)), encoded, _LENGTH.pack(len(state)), state))


def events(rows: Iterable[tuple[UUID, int, bytes, bytes]]) -> bytes:
    """Rows of (originator_id, originator_version, `event_body(topic, state)`, chain_hash)."""
    parts = [HEADER]
    append = parts.append
    head = _EVENT_HEAD.pack
    for originator_id, version, body, chain_hash in rows:
        append(head(5, 16, originator_id.bytes, 8, version))
        append(body)
        append(_HASH_FIELD)
        append(chain_hash)
    parts.append(TRAILER)
    return b"".join(parts)


def keys(rows: Iterable[tuple[str, str, UUID, int, str]]) -> bytes:
    """(source text, event_id text, customer_id uuid, originator_version int8, digest text)."""
    parts = [HEADER]
    append = parts.append
    pack = struct.pack
    for source, event_id, customer, version, digest in rows:
        s, e, d = source.encode(), event_id.encode(), digest.encode()
        append(pack(">hi", 5, len(s)))
        append(s)
        append(pack(">i", len(e)))
        append(e)
        append(pack(">i16siqi", 16, customer.bytes, 8, version, len(d)))
        append(d)
    parts.append(TRAILER)
    return b"".join(parts)
