"""Foundation benchmark: raw COPY ceiling, `eventcrm import`, batched `record()`.

    make bench     (or: python -m bench.store)

Every figure is printed beside the raw PostgreSQL COPY rate measured in the same run,
on the same server, as a ratio: absolute times drift on shared machines, ratios less.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import psycopg

from adapters import pgcopy
from adapters.codec import StateTranscoder
from adapters.crypto import MasterKey
from adapters.simulate import interactions
from bench.common import MASTER_KEY, cli, line, scratch, server
from bench.common import settings as settings_for
from domain.customer import interaction_fields
from domain.interactions import parse_interaction
from infra.bootstrap import build_store

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "20000"))
PER_CUSTOMER = int(os.environ.get("BENCH_PER_CUSTOMER", "10"))
RECORD_EVENTS = int(os.environ.get("BENCH_RECORD_EVENTS", "20000"))
RECORD_BATCH = 500


def copy_ceiling(
    admin_url: str, count: int, customers: int, state_size: int
) -> tuple[float, float]:
    """Raw binary COPY of the rows an import of `count` interactions writes, and nothing
    else: `count + customers` events-table rows and `count` idempotency-key rows, into
    tables with the same columns and indexes. Returns (rows/s, interactions/s)."""
    state = b"x" * state_size
    body = pgcopy.event_body("domain.customer:Customer.InteractionRecorded", state)
    events = pgcopy.events(
        (uuid.uuid4(), 1 + n % 10, body, os.urandom(32)) for n in range(count + customers)
    )
    keys = pgcopy.keys(
        ("shop", f"event-{n}", uuid.uuid4(), 1 + n % 10, "d" * 64) for n in range(count)
    )
    with scratch(admin_url) as url, psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE ceiling_events (LIKE customer_events INCLUDING ALL)")
        conn.execute("CREATE TABLE ceiling_keys (LIKE interaction_keys INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                "COPY ceiling_events (originator_id, originator_version, topic, state, chain_hash)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(events)
            with cur.copy(
                "COPY ceiling_keys (source, event_id, customer_id, originator_version, digest)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(keys)
        conn.commit()
        elapsed = time.perf_counter() - started
    return (2 * count + customers) / elapsed, count / elapsed


def eventsourcing_ceiling(admin_url: str, count: int, state_size: int = 200) -> float:
    """Rows/s of a raw binary COPY into a table of eventsourcing's own shape (its
    PostgreSQL recorder's: originator uuid, version, topic, a ~200 B state, a bigserial
    notification id with its unique index, primary key on originator and version), best
    of three: the ceiling the issue measures the import against, one row per
    interaction (ADR 5 says what the import writes beyond it)."""
    state = b"x" * state_size
    topic = b"domain.customer:Customer.InteractionRecorded"
    head = struct.Struct(">hi16siqi")
    tail = struct.pack(">i", len(state)) + state
    body = b"".join(
        head.pack(4, 16, uuid.uuid4().bytes, 8, 1 + n % 10, len(topic)) + topic + tail
        for n in range(count)
    )
    data = pgcopy.HEADER + body + pgcopy.TRAILER
    best = 0.0
    with scratch(admin_url) as url, psycopg.connect(url) as conn:
        for attempt in range(3):
            table = f"es_ceiling_{attempt}"
            conn.execute(
                f"CREATE TABLE {table} (originator_id uuid NOT NULL, originator_version "
                "bigint NOT NULL, topic text, state bytea, notification_id bigserial, "
                "PRIMARY KEY (originator_id, originator_version))"
            )
            conn.execute(f"CREATE UNIQUE INDEX {table}_notification ON {table} (notification_id)")
            conn.commit()
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    f"COPY {table} (originator_id, originator_version, topic, state)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.write(data)
            conn.commit()
            best = max(best, count / (time.perf_counter() - started))
    return best


def typical_state_size(path: Path, sample: int = 2000) -> int:
    """Average stored-state size of the file's interactions, so the ceiling moves as many
    bytes as the import does."""
    transcoder = StateTranscoder()
    now = datetime.now(UTC)
    sizes = []
    with path.open("rb") as handle:
        for _, raw in zip(range(sample), handle, strict=False):
            item = parse_interaction(orjson.loads(raw), now=now, max_future_skew=timedelta(0))
            state = interaction_fields(item, "d" * 64)
            state["timestamp"] = now
            if state["personal"] is not None:
                state["personal"] = b"x" * (len(orjson.dumps(state["personal"])) + 29)
            sizes.append(len(transcoder.encode(state)))
    return sum(sizes) // len(sizes)


def import_rate(admin_url: str, path: Path, count: int) -> tuple[float, float]:
    """(first import, re-import of the same file) in interactions/s, via the real CLI."""
    with scratch(admin_url) as url:
        started = time.perf_counter()
        first = orjson.loads(cli(["import", str(path), "--json"], url).stdout)
        first_rate = count / (time.perf_counter() - started)
        assert first["recorded"] == count, first
        started = time.perf_counter()
        again = orjson.loads(cli(["import", str(path), "--json"], url).stdout)
        again_rate = count / (time.perf_counter() - started)
        assert again["recorded"] == 0, again
        assert again["duplicate"] == count, again
    return first_rate, again_rate


def record_rate(admin_url: str) -> float:
    """Events/s of `record()` in batches of 500 through eventsourcing (cold customers)."""
    items = list(interactions(customers=RECORD_EVENTS // 10, per_customer=10, seed=23))
    with scratch(admin_url) as url:
        store = build_store(
            settings_for(url),
            url,
            MasterKey.from_text(MASTER_KEY),
            as_role="eventcrm_app",
        )
        started = time.perf_counter()
        for start in range(0, len(items), RECORD_BATCH):
            outcomes = store.record(items[start : start + RECORD_BATCH])
            assert all(o.status == "recorded" for o in outcomes)
        rate = len(items) / (time.perf_counter() - started)
        store.close()
    return rate


def main() -> None:
    count = CUSTOMERS * PER_CUSTOMER
    with server() as admin_url, TemporaryDirectory() as tmp:
        path = Path(tmp) / "interactions.jsonl"
        with path.open("wb") as handle:
            for item in interactions(customers=CUSTOMERS, per_customer=PER_CUSTOMER, seed=11):
                handle.write(orjson.dumps(item) + b"\n")
        print(
            f"# eventcrm foundation benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} cores; {count:,} interactions, {CUSTOMERS:,} customers"
        )
        # Best of three: the ceiling is what the server can do, not what it did once.
        rows_rate, ceiling = max(
            copy_ceiling(admin_url, count, CUSTOMERS, typical_state_size(path)) for _ in range(3)
        )
        line(
            "ceiling",
            "raw COPY of the rows an import writes",
            ceiling,
            "interactions/s",
            ceiling=ceiling,
            target=f"({rows_rate:,.0f} rows/s: events + keys)",
        )
        shaped = eventsourcing_ceiling(admin_url, count)
        line(
            "ceiling",
            "raw COPY into eventsourcing's table shape",
            shaped,
            "rows/s",
            ceiling=shaped,
            target="(uuid, version, topic, 200 B state, bigserial + unique index)",
        )
        first, again = import_rate(admin_url, path, count)
        line(
            "import",
            f"eventcrm import, {count:,} / {CUSTOMERS:,} customers",
            first,
            "interactions/s",
            ceiling=shaped,
            target=f"target >= 0.40 x that ceiling ({first / ceiling:.2f} x the rows it writes)",
        )
        line("import", "same file again (all duplicates)", again, "interactions/s", ceiling=shaped)
        rate = record_rate(admin_url)
        line(
            "record",
            f"record(), batches of {RECORD_BATCH} (eventsourcing)",
            rate,
            "events/s",
            ceiling=ceiling,
            target="target >= 5,000/s",
        )


if __name__ == "__main__":
    main()
