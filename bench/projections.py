"""Projections benchmark: fold throughput, message codec, replay, export, churn quality.

    make bench     (or: python -m bench.projections)

Each figure is printed beside a ceiling measured in the same run: a bare loop over the
same events (fold), the raw SELECT of the customer's rows (replay), a raw scan of the
events table (export).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import psycopg

from adapters.crypto import MasterKey
from adapters.readside import ProjectionReader
from adapters.simulate import interactions, simulate
from bench.common import MASTER_KEY, cli, line, scratch, server
from bench.common import settings as settings_for
from domain.interactions import parse_interaction
from infra.bootstrap import build_store, default_policy_text
from projections import InputEvent, fold, load_policy, snapshot
from projections.messages import encode_customer_event
from streams.projector import parse_customer_event
from tests.unit.quality.simulate import auc

END = datetime(2026, 6, 1, tzinfo=UTC)
FOLD_CUSTOMERS = int(os.environ.get("BENCH_FOLD_CUSTOMERS", "5000"))
EXPORT_CUSTOMERS = int(os.environ.get("BENCH_EXPORT_CUSTOMERS", "100000"))
QUALITY_CUSTOMERS = int(os.environ.get("BENCH_QUALITY_CUSTOMERS", "5000"))


def as_inputs(wire: list[dict[str, object]]) -> dict[str, list[InputEvent]]:
    """Simulated wire interactions as the projections see them, per customer (deduped)."""
    by_customer: dict[str, dict[str, InputEvent]] = defaultdict(dict)
    for item in wire:
        i = parse_interaction(item, now=END, max_future_skew=timedelta(0))
        key = f"{i.source}/{i.event_id}"
        by_customer[i.customer_id][key] = InputEvent(
            event_id=key,
            version=len(by_customer[i.customer_id]) + 2,
            kind=i.kind.value,
            occurred_at=i.occurred_at,
            amount=None if i.money is None else i.money.amount,
            currency=None if i.money is None else i.money.currency,
            facts=dict(i.facts),
        )
    return {c: sorted(e.values(), key=lambda x: x.occurred_at) for c, e in by_customer.items()}


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


def churn_quality() -> list[tuple[str, float, float, int]]:
    """AUC of the churn score and of days-since-last-purchase, predicting "no purchase in
    the 90 days after the cut-off", on the simulated population: all signals, and
    purchases only."""
    policy = load_policy(default_policy_text())
    cut = END - timedelta(days=90)
    customers = as_inputs(simulate(customers=QUALITY_CUSTOMERS, seed=17, end=END).interactions)
    results = []
    for label, keep in (("all signals", None), ("purchases only", {"purchase"})):
        scores, recency, churned = [], [], []
        for customer_id, events in customers.items():
            before = [
                e for e in events if e.occurred_at <= cut and (keep is None or e.kind in keep)
            ]
            purchases = [e for e in before if e.kind == "purchase"]
            if not purchases:
                continue
            view = snapshot(fold(customer_id, before, policy, as_of=cut))
            scores.append(float(view.churn_score))
            recency.append((cut - purchases[-1].occurred_at).total_seconds())
            churned.append(
                not any(e.kind == "purchase" and cut < e.occurred_at <= END for e in events)
            )
        results.append((label, auc(scores, churned), auc(recency, churned), len(scores)))
    return results


def message_rates() -> list[tuple[str, float, float, int]]:
    """(what, messages/s, ceiling, count) of the `customer-events` message: encoding as the
    relay does (`encode_customer_event` + orjson) and decoding as the projector does
    (`parse_customer_event`), against bare ``orjson.dumps`` / ``orjson.loads`` of the same
    messages. CPU time, best of 5."""
    customers = as_inputs(simulate(customers=FOLD_CUSTOMERS, seed=3, end=END).interactions)
    rows = [(c, e.version, e) for c, events in customers.items() for e in events]

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
        target="target >= 100,000/s",
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
    for label, score_auc, days_auc, n in churn_quality():
        print(
            f"quality   churn ROC-AUC ({label}, {n:,} customers): score {score_auc:.4f} "
            f"vs days-since-last-purchase {days_auc:.4f}"
        )
    with server() as admin_url:
        replay_ms, raw_ms = replay_latency(admin_url)
        print(
            f"replay    replay of a 1,000-event customer, from PostgreSQL   {replay_ms:8.1f} ms "
            f"(raw SELECT {raw_ms:.1f} ms)  target <= 20 ms"
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


if __name__ == "__main__":
    main()
