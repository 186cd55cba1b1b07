"""Bad input of every class the issue names, each with the dead-letter code it must get.

`bad_records(n, seed=...)` makes ``n`` records cycling through `CLASSES`, every one with
a key of its own (no two bad records collide with each other), built from valid
interactions of a simulation so that each is wrong in exactly one way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.codec import MAX_WIRE_BYTES


@dataclass(frozen=True)
class BadRecord:
    kind: str
    """The class of bad input (a key of `CLASSES`)."""
    code: str
    """The dead-letter code it must end with."""
    key: bytes
    value: bytes
    conflicts_with: dict[str, Any] | None = None
    """For a same-key-other-payload record: the valid interaction it reuses the key of
    (published before it)."""


Maker = Callable[[dict[str, Any], str], tuple[bytes, dict[str, Any] | None]]


def _json(item: dict[str, Any]) -> bytes:
    return orjson.dumps(item)


def _named(item: dict[str, Any], tag: str) -> dict[str, Any]:
    """A copy under a fresh key (event id and customer of its own)."""
    return {**item, "event_id": f"bad-{tag}", "customer_id": f"bad-{tag}"}


def _oversize(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    padded = {**_named(item, tag), "attributes": {"pad": "x" * (MAX_WIRE_BYTES + 10)}}
    return _json(padded), None


def _malformed(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json(_named(item, tag))[:-7], None


def _invalid_utf8(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    text = _json(_named(item, tag))
    return text.replace(b'"source":"', b'"source":"\xff\xfe', 1), None


def _nul(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "source": "sh\x00op"}), None


def _deep(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    depth = 2000
    return (
        b'{"event_id":"bad-' + tag.encode() + b'","x":' + b"[" * depth + b"]" * depth + b"}",
        None,
    )


def _huge_number(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    # A JSON number far beyond any type: where an integer or an amount belongs.
    base = _json({**_named(item, tag), "occurred_at": 0})
    return base.replace(b'"occurred_at":0', b'"occurred_at":' + b"9" * 400, 1), None


def _wrong_type(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "source": 17}), None


def _missing_field(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    named = _named(item, tag)
    del named["occurred_at"]
    return _json(named), None


def _unknown_kind(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "kind": "teleported"}), None


def _empty_key(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "event_id": ""}), None


def _conflict(item: dict[str, Any], tag: str) -> tuple[bytes, dict[str, Any]]:
    from datetime import datetime, timedelta  # noqa: PLC0415

    earlier = datetime.fromisoformat(item["occurred_at"]) - timedelta(minutes=1)
    return _json({**item, "occurred_at": earlier.isoformat()}), item


def _far_future(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "occurred_at": "2999-01-01T00:00:00Z"}), None


def _far_past(item: dict[str, Any], tag: str) -> tuple[bytes, None]:
    return _json({**_named(item, tag), "occurred_at": "1901-01-01T00:00:00Z"}), None


CLASSES: dict[str, tuple[str, Maker]] = {
    "oversize": ("oversize", _oversize),
    "malformed JSON": ("malformed_json", _malformed),
    "invalid UTF-8": ("invalid_utf8", _invalid_utf8),
    "NUL bytes": ("invalid_characters", _nul),
    "deep nesting": ("too_deep", _deep),
    "huge number": ("malformed_json", _huge_number),
    "wrong type": ("wrong_type", _wrong_type),
    "missing field": ("missing_field", _missing_field),
    "unknown kind": ("unknown_kind", _unknown_kind),
    "empty key": ("empty", _empty_key),
    "same key, other payload": ("conflicting_duplicate", _conflict),
    "far future": ("in_future", _far_future),
    "far past": ("out_of_range", _far_past),
}
"""class → (expected dead-letter code, maker)."""


def bad_records(
    n: int, valid: Sequence[dict[str, Any]], *, seed: int, tag: str = ""
) -> list[BadRecord]:
    """``n`` bad records cycling through every class (n >= len(CLASSES) has each).

    Each is derived from a valid interaction of ``valid``; a conflicting duplicate
    reuses a distinct valid interaction's key (published before it by the caller).
    """
    rng = random.Random(seed)
    kinds = list(CLASSES)
    used_for_conflict: set[tuple[str, str]] = set()
    purchases = [i for i in valid if i["kind"] == "purchase"]
    out: list[BadRecord] = []
    for number in range(n):
        kind = kinds[number % len(kinds)]
        code, make = CLASSES[kind]
        label = f"{tag}{number}"
        if kind == "same key, other payload":
            while True:
                base = rng.choice(purchases)
                key = (base["source"], base["event_id"])
                if key not in used_for_conflict:
                    used_for_conflict.add(key)
                    break
        else:
            base = rng.choice(purchases)
        value, original = make(base, label)
        customer = original["customer_id"] if original else f"bad-{label}"
        out.append(BadRecord(kind, code, customer.encode(), value, original))
    return out


def mixed(
    valid: Sequence[dict[str, Any]], bad: Sequence[BadRecord], *, seed: int
) -> list[tuple[bytes, bytes]]:
    """The valid interactions in order with the bad records spread among them at random;
    a conflicting duplicate always after the interaction whose key it reuses."""
    rng = random.Random(seed)
    first_at: dict[tuple[str, str], int] = {}
    for n, item in enumerate(valid):
        first_at.setdefault((item["source"], item["event_id"]), n)
    placed: list[tuple[float, bytes, bytes]] = [
        (float(n), item["customer_id"].encode(), orjson.dumps(item)) for n, item in enumerate(valid)
    ]
    for record in bad:
        low = 0.0
        if record.conflicts_with is not None:
            original = record.conflicts_with
            low = first_at[(original["source"], original["event_id"])] + 0.5
        placed.append((rng.uniform(low, len(valid)), record.key, record.value))
    placed.sort(key=lambda entry: entry[0])
    return [(key, value) for _, key, value in placed]
