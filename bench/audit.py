"""Auditor's tools benchmark: `checkpoint` and `verify --against`, as events/s.

The ceiling is one bare pass over the columns a checkpoint comparison needs
(customer, version, chain hash, notification id), fetched from the same server in the
same run; the naive peer is `verify --history`'s chain recomputation, which reads and
hashes every stored event's bytes. Ratios, not times: the machine is shared.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import psycopg

from adapters.checkpoint import compare, compute
from adapters.crypto import MasterKey
from adapters.simulate import interactions
from bench.common import MASTER_KEY, cli, line, scratch, server
from bench.common import settings as settings_for
from infra.bootstrap import build_store

CUSTOMERS = int(os.environ.get("BENCH_AUDIT_CUSTOMERS", "10000"))
PER_CUSTOMER = int(os.environ.get("BENCH_PER_CUSTOMER", "10"))


def bare_pass(url: str) -> float:
    """Seconds to fetch (customer, version, hash, position) of every event, in order."""
    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor(name="bare") as curs:
        curs.itersize = 20_000
        started = time.perf_counter()
        curs.execute(
            "SELECT originator_id, originator_version, chain_hash, notification_id "
            "FROM customer_events ORDER BY originator_id, originator_version"
        )
        for _ in curs:
            pass
        return time.perf_counter() - started


def main() -> None:
    with server() as admin_url, TemporaryDirectory() as tmp, scratch(admin_url) as url:
        path = Path(tmp) / "interactions.jsonl"
        with path.open("wb") as handle:
            for item in interactions(customers=CUSTOMERS, per_customer=PER_CUSTOMER, seed=31):
                handle.write(orjson.dumps(item) + b"\n")
        cli(["import", str(path), "--json"], url)
        store = build_store(
            settings_for(url), url, MasterKey.from_text(MASTER_KEY), as_role="eventcrm_app"
        )
        try:
            events = store.recorder.max_notification_id() or 0
            print(
                f"# eventcrm audit benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                f"{os.cpu_count()} cores; {events:,} events, {CUSTOMERS:,} customers"
            )
            ceiling = events / min(bare_pass(url) for _ in range(3))
            line(
                "ceiling",
                "bare pass over (customer, version, hash, pos)",
                ceiling,
                "events/s",
                ceiling=ceiling,
            )
            started = time.perf_counter()
            checkpoint = compute(store, now=datetime.now(UTC))
            line(
                "audit",
                "checkpoint (heads + Merkle root)",
                events / (time.perf_counter() - started),
                "events/s",
                ceiling=ceiling,
            )
            started = time.perf_counter()
            result = compare(store, checkpoint)
            assert result.ok, result.to_dict()
            line(
                "audit",
                "verify --against (compare with a checkpoint)",
                events / (time.perf_counter() - started),
                "events/s",
                ceiling=ceiling,
            )
            started = time.perf_counter()
            assert store.verify_chains().ok
            line(
                "peer",
                "verify --history (recompute every chain)",
                events / (time.perf_counter() - started),
                "events/s",
                ceiling=ceiling,
            )
        finally:
            store.close()


if __name__ == "__main__":
    main()
