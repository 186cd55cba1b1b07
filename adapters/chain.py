"""The per-customer hash chain over stored bytes.

Each stored event's `chain_hash` covers the previous event's hash and this event's
stored (already encrypted) bytes, so the chain stays verifiable after a customer's key
is shredded, and any rewrite of history breaks every later link:

    content(n) = sha256(len(topic):u32 ‖ topic ‖ state)
    link(n)    = sha256(link(n-1) ‖ originator_id ‖ version:u64 ‖ content(n)),  link(0) = 0³²

Splitting off `content` lets the bulk import hash the large part of each event in its
worker processes, leaving only a small hash to compute under the table lock.
"""

from __future__ import annotations

import struct
from hashlib import sha256
from uuid import UUID

GENESIS = bytes(32)
_LENGTH = struct.Struct(">I")
_VERSION = struct.Struct(">Q")


def content_digest(topic: str, state: bytes) -> bytes:
    encoded = topic.encode()
    return sha256(b"".join((_LENGTH.pack(len(encoded)), encoded, state))).digest()


def link_content(previous: bytes, originator_id: UUID, version: int, content: bytes) -> bytes:
    packed = b"".join((previous, originator_id.bytes, _VERSION.pack(version), content))
    return sha256(packed).digest()


def link(previous: bytes, originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    return link_content(previous, originator_id, version, content_digest(topic, state))
