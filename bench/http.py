"""HTTP API benchmark: `POST /v1/interactions` batches end to end, and `GET
/v1/customers/{id}` latency under concurrent loopback load.

    python -m bench.http      (BENCH_HTTP_INTERACTIONS, BENCH_HTTP_POSTERS, BENCH_HTTP_CLIENTS,
                               BENCH_HTTP_GETS)

The API runs as the operator runs it (`eventcrm serve --role api`, its own process);
the load generator is httpx in threads of this one. Each figure is printed beside a
ceiling and a naive peer measured in the same run:
- intake: ceiling = `CustomerStore.record()` in-process on the same batches (the store
  path without HTTP); naive peer = one interaction per request.
- reads: ceiling = `GET /healthz` under the same load (HTTP and auth-free floor);
  naive peer = `eventcrm customer ID --json`, a process per question (ops' way before).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from adapters.crypto import MasterKey
from adapters.simulate import simulate
from bench.common import MASTER_KEY, app_url, cli, console_script, line, scratch, server
from bench.common import settings as settings_for
from infra.bootstrap import wired

INTERACTIONS = int(os.environ.get("BENCH_HTTP_INTERACTIONS", "20000"))
CLIENTS = int(os.environ.get("BENCH_HTTP_CLIENTS", "4"))
GETS = int(os.environ.get("BENCH_HTTP_GETS", "2000"))
POSTERS = int(os.environ.get("BENCH_HTTP_POSTERS", "1"))
"""Concurrent producers posting batches (more contend for the events table's lock)."""
BATCH = 500


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": app_url(url),
        "EVENTCRM_MASTER_KEY": MASTER_KEY,
        "EVENTCRM_HOME": "/nonexistent-eventcrm-home",
    }
    process = subprocess.Popen(
        [console_script(), "serve", "--role", "api", "--http", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the API did not start")


def batches(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[n : n + size] for n in range(0, len(items), size)]


def post_all(base: str, token: str, groups: list[Any]) -> float:
    """Seconds to POST every group with `POSTERS` concurrent producers (asserting 202s)."""
    headers = {"Authorization": f"Bearer {token}"}

    def send(chunk: list[Any]) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            for body in chunk:
                response = http.post("/v1/interactions", json=body)
                assert response.status_code == 202, response.text[:300]

    shares = [groups[n::POSTERS] for n in range(POSTERS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(POSTERS) as pool:
        list(pool.map(send, shares))
    return time.perf_counter() - started


def latencies(base: str, token: str, paths: list[str]) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    shares = [paths[n::CLIENTS] for n in range(CLIENTS)]

    def run(share: list[str]) -> list[float]:
        timings = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            for path in share:
                started = time.perf_counter()
                response = http.get(path)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:300]
        return timings

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [t for share in pool.map(run, shares) for t in share]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_line(what: str, value: float, ceiling: float, peer: float) -> None:
    print(
        f"http      {what:<46} {value * 1000:>9.2f} ms   "
        f"{value / ceiling:6.1f} × ceiling ({ceiling * 1000:.2f} ms)   "
        f"naive peer {peer * 1000:.0f} ms = {peer / value:,.0f} × slower",
        flush=True,
    )


def measure(url: str) -> None:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    customers = max(10, INTERACTIONS // 25)
    items = simulate(customers=customers, seed=5, end=end, days=365).interactions
    items = items[:INTERACTIONS]
    half = len(items) // 2
    settings = settings_for(app_url(url))
    key = MasterKey.from_text(MASTER_KEY)
    with wired(settings, app_url(url), key, as_role=None) as services:
        producer = services.tokens.create(name="bench-producer", role="producer")
        ops = services.tokens.create(name="bench-ops", role="ops")
        started = time.perf_counter()
        for group in batches(items[:half], BATCH):
            services.store.record(group)
        direct = half / (time.perf_counter() - started)
    port = free_port()
    api = start_api(url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        rest = items[half:]
        naive_share = rest[: min(1000, len(rest) // 10)]
        batched_share = rest[len(naive_share) :]
        seconds = post_all(base, producer, batches(batched_share, BATCH))
        rate = len(batched_share) / seconds
        naive = len(naive_share) / post_all(base, producer, naive_share)
        line("http", f"POST /v1/interactions, batches of {BATCH}", rate, "interactions/s",
             ceiling=direct, target=f"(ceiling: record() in-process {direct:,.0f}/s)")  # fmt: skip
        line("http", "  naive peer: one interaction per request", naive, "interactions/s",
             ceiling=direct, target=f"batches are {rate / naive:.1f}× faster")  # fmt: skip

        ids = sorted({item["customer_id"] for item in items})
        paths = [f"/v1/customers/{ids[n % len(ids)]}" for n in range(GETS)]
        latencies(base, ops, paths[: GETS // 10])  # warm-up
        reads = latencies(base, ops, paths)
        floor = latencies(base, ops, ["/healthz"] * GETS)
        peer_runs = []
        for customer in ids[:5]:
            started = time.perf_counter()
            cli(["customer", customer, "--json"], url)
            peer_runs.append(time.perf_counter() - started)
        peer = statistics.median(peer_runs)
        for label, q in (("p50", 50), ("p99", 99)):
            latency_line(
                f"GET /v1/customers/{{id}} {label}, {CLIENTS} clients",
                percentile(reads, q),
                percentile(floor, q),
                peer,
            )
        total = sum(reads)
        print(
            f"http      GET /v1/customers/{{id}} throughput {len(reads) / (total / CLIENTS):,.0f}"
            " requests/s",
            flush=True,
        )
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)


def main(run: Callable[[str], None] = measure) -> None:
    print(f"HTTP API benchmark on {os.cpu_count()} cores, {CLIENTS} loopback clients", flush=True)
    with server() as admin, scratch(admin) as url:
        psycopg.connect(url).close()
        run(url)


if __name__ == "__main__":
    main()
