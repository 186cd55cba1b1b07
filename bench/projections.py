"""Projections benchmark: fold throughput, message codec, replay, export, churn quality.

    make bench     (or: python -m bench.projections)

Each figure is printed beside a ceiling measured in the same run: a bare loop over the
same events (fold), the raw SELECT of the customer's rows (replay), a raw scan of the
events table (export).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import psycopg

from adapters.crypto import MasterKey
from adapters.populations import as_histories
from adapters.readside import ProjectionReader
from adapters.simulate import interactions, simulate
from bench.common import MASTER_KEY, cli, line, scratch, server
from bench.common import settings as settings_for
from infra.bootstrap import build_store, default_policy_text
from projections import InputEvent, fold, load_policy, snapshot
from projections.messages import encode_customer_event
from streams.projector import parse_customer_event

END = datetime(2026, 6, 1, tzinfo=UTC)
FOLD_CUSTOMERS = int(os.environ.get("BENCH_FOLD_CUSTOMERS", "5000"))
EXPORT_CUSTOMERS = int(os.environ.get("BENCH_EXPORT_CUSTOMERS", "100000"))


def as_inputs(wire: list[dict[str, Any]]) -> dict[str, list[InputEvent]]:
    """Simulated wire interactions as the projections see them, per customer (deduped)."""
    return dict(as_histories(wire, now=END))


def fold_rate() -> tuple[float, float, int]:
    """(events/s of fold + snapshot per customer as of END, events/s of the simplest
    possible projection over the same events: sort them, sum the window's purchases)."""
    policy = load_policy(default_policy_text())
    customers = as_inputs(simulate(customers=FOLD_CUSTOMERS, seed=3, end=END).interactions)
    count = sum(len(e) for e in customers.values())
    started = time.perf_counter()
    for customer_id, events in customers.items():
        snapshot(fold(customer_id, events, policy, as_of=END))
    rate = count / (time.perf_counter() - started)
    window_start = END - timedelta(days=365)
    started = time.perf_counter()
    for events in customers.values():
        revenue, purchases = Decimal(0), 0
        for e in sorted(events, key=lambda x: (x.occurred_at, x.event_id)):
            if e.kind == "purchase" and e.amount is not None and e.occurred_at >= window_start:
                revenue += e.amount
                purchases += 1
    ceiling = count / (time.perf_counter() - started)
    return rate, ceiling, count


def replay_latency(admin_url: str) -> tuple[float, float]:
    """(median ms of `replay` of a 1,000-event customer incl. reading it, raw SELECT ms)."""
    items = list(interactions(customers=1, per_customer=1000, seed=9))
    with scratch(admin_url) as url:
        store = build_store(
            settings_for(url), url, MasterKey.from_text(MASTER_KEY), as_role="eventcrm_app"
        )
        for start in range(0, len(items), 500):
            store.record(items[start : start + 500])
        reader = ProjectionReader(store, load_policy(default_policy_text()))
        customer_id = items[0]["customer_id"]
        assert isinstance(customer_id, str)
        timings = []
        for _ in range(15):
            started = time.perf_counter()
            steps = reader.replay(customer_id, as_of=END)
            timings.append((time.perf_counter() - started) * 1000)
        assert len([s for s in steps if s.event_id]) == 1000
        raw = []
        with psycopg.connect(url) as conn:
            for _ in range(15):
                started = time.perf_counter()
                conn.execute(
                    "SELECT originator_version, topic, state FROM customer_events "
                    "WHERE originator_id = (SELECT originator_id FROM customer_events "
                    "WHERE originator_version = 1 LIMIT 1) ORDER BY originator_version"
                ).fetchall()
                raw.append((time.perf_counter() - started) * 1000)
        store.close()
    return statistics.median(timings), statistics.median(raw)


def state_size() -> tuple[float, int]:
    """(bytes per customer, customers) the projector holds in memory: every customer of a
    simulated population folded as the projector loads it, measured with tracemalloc
    (the states and everything they reference; the fold's temporaries are freed)."""
    policy = load_policy(default_policy_text())
    customers = as_inputs(simulate(customers=2000, seed=5, end=END).interactions)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = [fold(c, events, policy, as_of=END) for c, events in customers.items()]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / len(states), len(states)


def rebuild_rate(admin_url: str, path: Path) -> tuple[float, float, int]:
    """(events/s of `eventcrm rebuild` of every read model, events/s of a raw scan of the
    same rows, events) on a simulated population (~20 events per customer, as the fold)."""
    with scratch(admin_url) as url:
        cli(["import", str(path), "--json"], url)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM customer_events WHERE originator_version > 1"
            ).fetchone()
            events = int(row[0]) if row else 0
        started = time.perf_counter()
        cli(["rebuild"], url)
        rebuilt = events / (time.perf_counter() - started)
        with psycopg.connect(url) as conn, conn.cursor(name="scan") as cur:
            started = time.perf_counter()
            cur.itersize = 20_000
            cur.execute(
                "SELECT originator_id, originator_version, topic, state FROM customer_events"
            )
            for _ in cur:
                pass
            ceiling = events / (time.perf_counter() - started)
    return rebuilt, ceiling, events


def export_rate(admin_url: str, path: Path) -> tuple[float, float]:
    """(customers/s of `eventcrm export` folding every customer, raw scan customers/s)."""
    with scratch(admin_url) as url:
        cli(["import", str(path), "--json"], url)
        started = time.perf_counter()
        out = cli(["export", "--as-of", END.isoformat(), "--format", "csv"], url).stdout
        rate = (out.count("\n") - 1) / (time.perf_counter() - started)
        with psycopg.connect(url) as conn, conn.cursor(name="scan") as cur:
            started = time.perf_counter()
            cur.itersize = 20_000
            cur.execute(
                "SELECT originator_id, originator_version, topic, state FROM "
                "customer_events ORDER BY originator_id, originator_version"
            )
            for _ in cur:
                pass
            ceiling = EXPORT_CUSTOMERS / (time.perf_counter() - started)
    return rate, ceiling


def message_rates() -> list[tuple[str, float, float, int]]:
    """(what, messages/s, ceiling, count) of the `customer-events` message: encoding as the
    relay does (`encode_customer_event` + orjson) and decoding as the projector does
    (`parse_customer_event`), against bare ``orjson.dumps`` / ``orjson.loads`` of the same
    messages. CPU time, best of 5."""
    customers = as_inputs(simulate(customers=FOLD_CUSTOMERS, seed=3, end=END).interactions)
    rows = [
        (c, n, replace(e, version=n))
        for c, events in customers.items()
        for n, e in enumerate(events, 2)  # version 1 is the customer's Created event
    ]

    def encode() -> list[bytes]:
        return [
            orjson.dumps(
                encode_customer_event(
                    position=n,
                    customer_id=c,
                    version=v,
                    stored_type="InteractionRecorded",
                    event=e,
                )
            )
            for n, (c, v, e) in enumerate(rows, 1)
        ]

    messages = encode()
    values = [orjson.loads(m) for m in messages]

    def best(run: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            started = time.process_time()
            run()
            times.append(time.process_time() - started)
        return len(rows) / min(times)

    return [
        ("encode", best(encode), best(lambda: [orjson.dumps(v) for v in values]), len(rows)),
        (
            "decode",
            best(lambda: [parse_customer_event(m) for m in messages]),
            best(lambda: [orjson.loads(m) for m in messages]),
            len(rows),
        ),
    ]


def main() -> None:
    print(f"# eventcrm projections benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    rate, ceiling, count = fold_rate()
    line(
        "fold",
        f"fold + snapshot, {count:,} events, one core",
        rate,
        "events/s",
        ceiling=ceiling,
        target="target >= 150,000/s",
    )
    for what, rate, ceiling, count in message_rates():
        line(
            "message",
            f"customer-events {what}, {count:,} messages",
            rate,
            "messages/s",
            ceiling=ceiling,
            target="(ceiling: bare orjson)",
        )
    print("quality   churn ranking against the baselines on every population: make quality")
    with server() as admin_url:
        replay_ms, raw_ms = replay_latency(admin_url)
        print(
            f"replay    replay of a 1,000-event customer, from PostgreSQL   {replay_ms:8.1f} ms "
            f"(raw SELECT {raw_ms:.1f} ms)  target <= 15 ms"
        )
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "customers.jsonl"
            with path.open("wb") as handle:
                for item in interactions(customers=EXPORT_CUSTOMERS, per_customer=3, seed=5):
                    handle.write(orjson.dumps(item) + b"\n")
            rate, ceiling = export_rate(admin_url, path)
            line(
                "export",
                f"eventcrm export of {EXPORT_CUSTOMERS:,} customers",
                rate,
                "customers/s",
                ceiling=ceiling,
                target="(ceiling: raw scan of their rows)",
            )
            population = Path(tmp) / "population.jsonl"
            with population.open("wb") as handle:
                today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                for item in simulate(customers=FOLD_CUSTOMERS, seed=3, end=today).interactions:
                    handle.write(orjson.dumps(item) + b"\n")
            rebuilt, ceiling, events = rebuild_rate(admin_url, population)
        line(
            "rebuild",
            f"eventcrm rebuild, {events:,} events of {FOLD_CUSTOMERS:,} customers",
            rebuilt,
            "events/s",
            ceiling=ceiling,
            target="target >= 50,000/s (ceiling: raw scan of the rows)",
        )
    size, held = state_size()
    print(
        f"state     projector state per customer, {held:,} held       {size:8,.0f} B    "
        f"        target <= 1,024 B (tracemalloc)"
    )


if __name__ == "__main__":
    main()
