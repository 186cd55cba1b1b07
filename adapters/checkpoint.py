"""Checkpoints: tamper evidence that survives a database superuser (ADR 0025).

The hash chain (ADR 0003) catches an edit in place, but whoever can write the table can
also delete a customer's tail, or edit an event and recompute every later link, or drop
a customer whole: the chain they leave is self-consistent. A checkpoint pins every
customer's chain head (customer id, version, chain hash) and the store's last
notification id at one instant, under a Merkle root, and is kept outside the database:
the file the auditor holds, and a message on the `checkpoints` topic when a broker is
configured. `verify --history --against FILE` then finds, for everything the checkpoint
covers:

- ``customer_removed``: a customer of the checkpoint has no events;
- ``events_deleted``: a customer's history ends before the checkpoint's version;
- ``chain_rewritten``: the stored hash at the checkpoint's version differs (an edit
  with the chain recomputed after it, or a row replaced);
- ``inserted_row``: an event at or before the checkpoint's notification id that the
  checkpoint does not cover (a forged row slipped into the past).

Events recorded after the checkpoint are what the next checkpoint covers.

Leaves and nodes are domain-separated SHA-256 (``0x00`` leaf, ``0x01`` node; an odd
node is carried up unpaired), so no leaf can pose as a node.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import orjson
from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from adapters.recorder import EVENTS_TABLE
from adapters.relay import deliver
from adapters.store import CustomerStore
from domain.customer import customer_uuid
from domain.errors import UsageError

log = logging.getLogger(__name__)

CHECKPOINTS_TABLE: Final = "checkpoints"
FORMAT: Final = "eventcrm-checkpoint/1"
_VERSION = struct.Struct(">Q")
EXAMPLES: Final = 20


@dataclass(frozen=True, slots=True)
class Head:
    customer_id: str
    version: int
    chain_hash: bytes

    @property
    def customer(self) -> UUID:
        return customer_uuid(self.customer_id)

    def leaf(self) -> bytes:
        return sha256(
            b"\x00" + self.customer.bytes + _VERSION.pack(self.version) + self.chain_hash
        ).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over leaves in order; the empty tree's root is sha256 of nothing."""
    level = list(leaves)
    if not level:
        return sha256(b"").digest()
    while len(level) > 1:
        paired = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


@dataclass
class Checkpoint:
    created_at: datetime
    position: int
    """The last notification id the checkpoint covers: every event at or before it."""
    heads: list[Head]
    """Sorted by aggregate id (the leaves' order)."""
    checkpoint_id: int | None = None

    @property
    def root(self) -> str:
        return merkle_root([h.leaf() for h in self.heads]).hex()

    @property
    def events(self) -> int:
        return sum(h.version for h in self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "checkpoint_id": self.checkpoint_id,
            "created_at": self.created_at.isoformat(),
            "root": self.root,
            "position": self.position,
            "customers": len(self.heads),
            "events": self.events,
            "heads": [
                {
                    "customer_id": h.customer_id,
                    "version": h.version,
                    "chain_hash": h.chain_hash.hex(),
                }
                for h in self.heads
            ],
        }

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "heads"}


def _heads_sql(schema: str) -> Any:
    events = Identifier(schema, EVENTS_TABLE)
    return SQL(
        "SELECT h.originator_id, h.originator_version, h.chain_hash, h.notification_id,"
        " eventcrm_try_jsonb(f.state) ->> 'customer_id' AS customer_id "
        "FROM (SELECT DISTINCT ON (originator_id) originator_id, originator_version,"
        "  chain_hash, notification_id FROM {e} ORDER BY originator_id, originator_version DESC) h "
        "LEFT JOIN {e} f ON f.originator_id = h.originator_id AND f.originator_version = 1 "
        "ORDER BY h.originator_id"
    ).format(e=events)


def compute(store: CustomerStore, *, now: datetime) -> Checkpoint:
    """Every customer's chain head, read in one snapshot (one statement)."""
    heads = []
    position = 0
    with store.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(_heads_sql(store.datastore.schema))
        for row in curs.fetchall():
            customer_id = row["customer_id"] or str(row["originator_id"])
            heads.append(
                Head(customer_id, int(row["originator_version"]), bytes(row["chain_hash"]))
            )
            position = max(position, int(row["notification_id"]))
    return Checkpoint(now, position, heads)


def take(store: CustomerStore, *, now: datetime) -> Checkpoint:
    """Compute a checkpoint and store its root (the heads go to the file and topic)."""
    checkpoint = compute(store, now=now)
    statement = SQL(
        "INSERT INTO {} (created_at, root, position, customers, events) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id"
    ).format(Identifier(store.datastore.schema, CHECKPOINTS_TABLE))
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(
            statement,
            (now, checkpoint.root, checkpoint.position, len(checkpoint.heads), checkpoint.events),
        )
        row = curs.fetchone()
    assert row is not None
    checkpoint.checkpoint_id = int(row["id"])
    return checkpoint


def publish(producer: KafkaProducer, topic: str, checkpoint: Checkpoint) -> None:
    """The checkpoint's summary (root, position, counts) on the `checkpoints` topic: a
    copy of the root that no database superuser can reach. The heads stay in the file."""
    sent = producer.send(topic, key=b"checkpoint", value=orjson.dumps(checkpoint.summary()))
    deliver(producer, [sent])


def run_periodically(
    store: CustomerStore,
    producer: KafkaProducer,
    topic: str,
    stop: threading.Event,
    *,
    interval: float,
    clock: Callable[[], datetime],
    directory: Path | None = None,
) -> None:
    """`serve`'s periodic step: a checkpoint every ``interval`` seconds until ``stop``,
    stored, published, and written to ``directory`` if given. A failed round is logged
    and retried at the next one (the next checkpoint covers everything anyway)."""
    while not stop.wait(interval):
        try:
            checkpoint = take(store, now=clock())
            if directory is not None:
                write_file(checkpoint, directory / f"checkpoint-{checkpoint.checkpoint_id}.json")
            publish(producer, topic, checkpoint)
            log.info("checkpoint %s: root %s", checkpoint.checkpoint_id, checkpoint.root)
        except Exception:
            log.exception("checkpoint failed; retrying in %.0f s", interval)


def encode(checkpoint: Checkpoint) -> bytes:
    return orjson.dumps(checkpoint.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"


def write_file(checkpoint: Checkpoint, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode(checkpoint))
    tmp.replace(path)


def load_file(path: Path) -> Checkpoint:
    """Read a checkpoint file; a file that is not one, or whose heads do not give its
    root (altered), is a usage error naming the file."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(
            f"cannot read the checkpoint {path}: {exc.strerror or exc}",
            code="file_error",
            hint="name a file written by `eventcrm checkpoint --out`",
        ) from None
    except orjson.JSONDecodeError:
        raise _not_a_checkpoint(path, "not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _not_a_checkpoint(path, f"format is not {FORMAT}")
    try:
        checkpoint = Checkpoint(
            created_at=datetime.fromisoformat(data["created_at"]),
            position=int(data["position"]),
            heads=[
                Head(str(h["customer_id"]), int(h["version"]), bytes.fromhex(h["chain_hash"]))
                for h in data["heads"]
            ],
            checkpoint_id=data.get("checkpoint_id"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _not_a_checkpoint(path, f"malformed: {exc}") from None
    checkpoint.heads.sort(key=lambda h: h.customer.bytes)
    if checkpoint.root != data.get("root"):
        raise _not_a_checkpoint(path, "its heads do not give its root (the file was altered)")
    return checkpoint


def _not_a_checkpoint(path: Path, why: str) -> UsageError:
    return UsageError(
        f"{path} is not a valid eventcrm checkpoint: {why}",
        code="invalid_checkpoint",
        hint="name a file written by `eventcrm checkpoint --out`",
    )


@dataclass
class Comparison:
    """What `verify --against` found, by kind, each example naming customer and version."""

    checkpoint: dict[str, Any]
    covered_customers: int = 0
    covered_events: int = 0
    findings: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "customer_removed": [],
            "events_deleted": [],
            "chain_rewritten": [],
            "inserted_row": [],
        }
    )
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, example: dict[str, Any]) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.findings[kind]) < EXAMPLES:
            self.findings[kind].append(example)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checkpoint": self.checkpoint,
            "covered_customers": self.covered_customers,
            "covered_events": self.covered_events,
            "checks": {
                kind: {"count": self.counts.get(kind, 0), "examples": examples}
                for kind, examples in self.findings.items()
            },
        }


def _scan(
    store: CustomerStore, batch_rows: int
) -> Iterator[tuple[UUID, int, bytes, int, str | None]]:
    statement = SQL(
        "SELECT originator_id, originator_version, chain_hash, notification_id,"
        " CASE WHEN originator_version = 1"
        "  THEN eventcrm_try_jsonb(state) ->> 'customer_id' END AS customer_id "
        "FROM {} ORDER BY originator_id, originator_version"
    ).format(Identifier(store.datastore.schema, EVENTS_TABLE))
    with (
        store.datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(name="eventcrm_checkpoint_scan") as curs,
    ):
        curs.itersize = batch_rows
        curs.execute(statement)
        for row in curs:
            yield (
                row["originator_id"],
                int(row["originator_version"]),
                bytes(row["chain_hash"]),
                int(row["notification_id"]),
                row["customer_id"],
            )


def compare(
    store: CustomerStore, checkpoint: Checkpoint, *, batch_rows: int = 20_000
) -> Comparison:
    """The store against a checkpoint, in one pass over the events (no state bytes read;
    `verify --history` recomputes the chains themselves)."""
    result = Comparison(checkpoint.summary())
    covered = {h.customer: h for h in checkpoint.heads}
    result.covered_customers = len(covered)
    result.covered_events = checkpoint.events
    seen: dict[UUID, int] = {}
    names: dict[UUID, str] = {}
    for customer, version, chain_hash, position, customer_id in _scan(store, batch_rows):
        if customer_id is not None:
            names[customer] = customer_id
        seen[customer] = version
        head = covered.get(customer)
        name = head.customer_id if head is not None else names.get(customer, str(customer))
        if position <= checkpoint.position and (head is None or version > head.version):
            result.add(
                "inserted_row",
                {"customer_id": name, "version": version, "position": position},
            )
        if head is not None and version == head.version and chain_hash != head.chain_hash:
            result.add(
                "chain_rewritten",
                {
                    "customer_id": name,
                    "version": version,
                    "checkpoint_hash": head.chain_hash.hex(),
                    "stored_hash": chain_hash.hex(),
                },
            )
    for head in checkpoint.heads:
        last = seen.get(head.customer)
        if last is None:
            result.add(
                "customer_removed", {"customer_id": head.customer_id, "version": head.version}
            )
        elif last < head.version:
            result.add(
                "events_deleted",
                {
                    "customer_id": head.customer_id,
                    "version": last + 1,
                    "checkpoint_version": head.version,
                    "stored_version": last,
                },
            )
    return result
