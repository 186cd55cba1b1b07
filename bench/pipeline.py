"""End-to-end benchmark: Kafka `interactions` → ingest → store → relay → projector.

    make bench     (or: python -m bench.pipeline)

Every figure is printed beside a ceiling measured in the same run, on the same machine:

- ceiling:  raw binary COPY of exactly the rows ingesting the batch writes (best of three);
- naive:    `CustomerStore.record([one])` per interaction, one eventsourcing save() each;
- pipeline: interactions/s from the first publish until every stored event is applied
            to the read models, with the roles (a) as threads of this process
            (`infra.serve.run_roles`), and (b) as one `eventcrm serve --role` process
            each; group joins are excluded (a warm-up batch goes through first). Then
            the same population stamped as live traffic, in the faster of the two;
- alert:    publish of a triggering interaction → its alert on `churn-alerts`, under a
            paced background load of live traffic, in the faster configuration; its
            ceiling is the transport alone: per probe message, the sum of the three
            Kafka hops (produce + flush → an assigned consumer) as the alert's path
            reads them (`HOPS`). `#` lines split it into stages by timestamps.

Each configuration gets a fresh scratch database, a fresh embedded broker and a fresh
topic prefix. `#` lines say where the CPU went (from /proc, per role, Tansu and the
database's PostgreSQL backends), since a rate alone does not say what limits it.

Knobs: BENCH_PIPELINE_INTERACTIONS, BENCH_PIPELINE_NAIVE, BENCH_PIPELINE_ALERTS,
BENCH_PIPELINE_LOAD_RATE.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TextIO

import orjson
import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.crypto import MasterKey
from adapters.populations import as_histories
from adapters.simulate import simulate
from adapters.topics import TopicNames, ensure_topics
from bench import transport
from bench.common import MASTER_KEY, app_url, console_script, cpu_seconds, line, scratch, server
from bench.common import settings as settings_for
from bench.store import copy_ceiling, typical_state_size
from infra import kafka
from infra.bootstrap import Root, build_store, default_policy_text
from infra.broker import embedded_broker
from infra.serve import Tuning, run_roles
from projections import fold, load_policy, snapshot
from streams.app import FETCH_MAX_WAIT_MS

INTERACTIONS = int(os.environ.get("BENCH_PIPELINE_INTERACTIONS", "40000"))
NAIVE = int(os.environ.get("BENCH_PIPELINE_NAIVE", "2000"))
ALERTS = int(os.environ.get("BENCH_PIPELINE_ALERTS", "150"))
LOAD_RATE = int(os.environ.get("BENCH_PIPELINE_LOAD_RATE", "1000"))
CONFIGS = os.environ.get("BENCH_PIPELINE_CONFIGS", "processes").split(",")
"""Which role layouts to time: `processes` (one `eventcrm serve` process per role, as
operators run them) and/or `threads` (all roles in this process: GIL-bound, ~1/3 of
the rate; off by default to keep `make bench` under ten minutes)."""
PER_CUSTOMER = 20
"""About how many interactions `simulate` gives one customer over its default year."""
TRIGGER_INTERVAL = 0.1
ROLES = ("ingest", "relay", "project")
THREADS, PROCESSES = "threads", "processes"
LABEL = {THREADS: "all roles in one process", PROCESSES: "one process per role"}

Message = tuple[bytes, bytes]


def as_messages(items: Sequence[dict[str, Any]]) -> list[Message]:
    """Wire messages (key = customer id), serialized before any clock starts."""
    return [(item["customer_id"].encode(), orjson.dumps(item)) for item in items]


def stamped(items: Sequence[dict[str, Any]]) -> list[Message]:
    """The same interactions as live traffic: `occurred_at` within the last minute, in
    publish order. (The simulation's own timestamps span a year before today: the
    projector's timer then moves each customer it holds to the wall clock, so every
    later event of that customer is older than its state's clock and takes the
    projections' refold path instead of a plain fold.)"""
    step = timedelta(seconds=50) / max(1, len(items))
    start = datetime.now(UTC) - timedelta(seconds=60)
    return as_messages(
        [item | {"occurred_at": (start + n * step).isoformat()} for n, item in enumerate(items)]
    )


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- where the CPU goes (Linux /proc) ---------------------------------------------------


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                yield int(entry)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def server_cpu(database: str, broker_port: int) -> dict[str, float]:
    """Cumulative CPU seconds of our Tansu and of the PostgreSQL processes working for
    `database` (its backends, plus the WAL writer, checkpointer and background writer)."""
    out = {"tansu": 0.0, "postgres": 0.0}
    for pid in _pids():
        command = _cmdline(pid)
        if "tansu" in command and f":{broker_port} " in command:
            group = "tansu"
        elif command.startswith("postgres:") and (
            f" {database} " in command
            or any(aux in command for aux in ("walwriter", "checkpointer", "background writer"))
        ):
            group = "postgres"
        else:
            continue
        seconds = cpu_seconds(pid)
        if seconds is not None:
            out[group] += seconds
    return out


MACHINE = "machine"
"""The whole machine's busy CPU seconds (every process: other work on a shared machine
takes cores from the pipeline too)."""


def machine_cpu() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat", "rb") as handle:
            ticks = [int(n) for n in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """Cumulative CPU seconds of this process's threads, grouped by the role they serve
    (the project role's blocking work runs in asyncio's `to_thread` workers; kafka-python
    network and heartbeat threads serve several roles and the benchmark alike)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    pid = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.listdir(f"/proc/{pid}/task"):
            seconds = cpu_seconds(pid, int(entry))
            if seconds is None:
                continue
            name = names.get(int(entry), "")
            if name.startswith("eventcrm-"):
                group = name.removeprefix("eventcrm-")
            elif name.startswith("asyncio_"):
                group = "project"
            elif name.startswith("kafka"):
                group = "kafka-python threads"
            else:
                group = "bench"
            out[group] = out.get(group, 0.0) + seconds
    return out


# --- running pipelines --------------------------------------------------------------------


@dataclass
class Live:
    """A running pipeline: its database, broker, topics and roles."""

    kind: str
    url: str
    bootstrap: str
    names: TopicNames
    check: Callable[[], None]
    """Raises if a role died."""
    role_cpu: Callable[[], dict[str, float]]
    database: str
    published: int = 0
    logs: list[str] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        port = int(self.bootstrap.rsplit(":", 1)[1])
        return {**self.role_cpu(), **server_cpu(self.database, port), MACHINE: machine_cpu()}

    def publish(self, producer: KafkaProducer, messages: Sequence[Message]) -> None:
        for key, value in messages:
            producer.send(self.names.interactions, key=key, value=value)
        self.published += len(messages)


class _Collect(logging.Handler):
    """Keeps the warnings and errors the in-process roles log, for the summary."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def running(kind: str, admin_url: str, tmp: Path) -> Iterator[Live]:
    """A fresh database, broker and topic prefix with the roles running; stops them all
    (and waits for them) on any exit."""
    prefix = f"b{uuid.uuid4().hex[:8]}."
    names = TopicNames(prefix=prefix)
    with scratch(admin_url) as url, embedded_broker() as broker:
        ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
        database = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        starter = _threads if kind == THREADS else _processes
        with starter(url, broker.bootstrap, prefix, tmp / prefix) as (check, role_cpu, logs):
            yield Live(kind, url, broker.bootstrap, names, check, role_cpu, database, logs=logs)


@contextlib.contextmanager
def _threads(
    url: str, bootstrap: str, prefix: str, workdir: Path
) -> Iterator[tuple[Callable[[], None], Callable[[], dict[str, float]], list[str]]]:
    """All roles as threads of this process (`infra.serve.run_roles`, the way
    tests/integration/test_pipeline.py runs them)."""
    settings = settings_for(url).model_copy(update={"topic_prefix": prefix})
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run_roles(
                Root(settings, url, MasterKey.from_text(MASTER_KEY), as_role="eventcrm_app"),
                set(ROLES),
                stop,
                bootstrap=bootstrap,
                tuning=Tuning.fast(),
            )
        except BaseException as exc:
            failure.append(exc)
            raise

    def check() -> None:
        if failure or not roles.is_alive():
            raise RuntimeError(f"the in-process roles stopped: {failure!r}")

    collect = _Collect()
    logging.getLogger().addHandler(collect)
    # faust names its data directory after the app, relative to the working directory.
    workdir.mkdir(parents=True)
    cwd = Path.cwd()
    os.chdir(workdir)
    roles = threading.Thread(target=serve, name="pipeline", daemon=True)
    roles.start()
    try:
        yield check, thread_cpu, collect.lines
    finally:
        stop.set()
        roles.join(timeout=60)
        os.chdir(cwd)
        logging.getLogger().removeHandler(collect)
        if roles.is_alive():
            print("# the in-process roles did not stop within 60 s", file=sys.stderr)


@contextlib.contextmanager
def _processes(
    url: str, bootstrap: str, prefix: str, workdir: Path
) -> Iterator[tuple[Callable[[], None], Callable[[], dict[str, float]], list[str]]]:
    """One `eventcrm serve --role ROLE` process per role, as an operator runs them."""
    workdir.mkdir(parents=True)
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": app_url(url),
        "EVENTCRM_ADMIN_DATABASE_URL": url,
        "EVENTCRM_MASTER_KEY": MASTER_KEY,
        "EVENTCRM_KAFKA_BOOTSTRAP": bootstrap,
        "EVENTCRM_TOPIC_PREFIX": prefix,
        "EVENTCRM_KAFKA_SESSION_TIMEOUT_SECONDS": "2",
        "EVENTCRM_HOME": str(workdir / "home"),
        "COLUMNS": "200",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    outputs: dict[str, TextIO] = {}
    logs: list[str] = []
    try:
        for role in ROLES:
            outputs[role] = (workdir / f"{role}.log").open("w+")
            processes[role] = subprocess.Popen(
                [console_script(), "serve", "--role", role],
                env=env,
                cwd=workdir,  # faust's data directory lands here, not in the repository
                stdin=subprocess.DEVNULL,
                stdout=outputs[role],
                stderr=subprocess.STDOUT,
            )

        def check() -> None:
            for role, process in processes.items():
                if process.poll() is not None:
                    outputs[role].seek(0)
                    tail = outputs[role].read()[-3000:]
                    raise RuntimeError(f"role {role} exited with {process.returncode}:\n{tail}")

        def role_cpu() -> dict[str, float]:
            out = {"bench": cpu_seconds(os.getpid()) or 0.0}
            for role, process in processes.items():
                out[role] = cpu_seconds(process.pid) or 0.0
            return out

        yield check, role_cpu, logs
    finally:
        started = time.monotonic()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for role, process in processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logs.append(f"ERROR bench: role {role} ignored SIGTERM for 30 s; killed")
                process.kill()
                process.wait()
            if process.returncode != 0:
                logs.append(f"ERROR bench: role {role} exited with status {process.returncode}")
        stopped = time.monotonic() - started
        if stopped > 10:
            logs.append(f"WARNING bench: the roles took {stopped:.1f} s to stop on SIGTERM")
        for role, output in outputs.items():
            output.seek(0)
            logs.extend(
                f"{text} [{role}]"
                for text in output.read().splitlines()
                if text.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
            )
            output.close()


def report_latency(latency: Latency, kind: str) -> None:
    if not latency.total:
        raise RuntimeError("no alert arrived")
    # The transport alone: per probe message, the sum of its three hops as the alert's
    # path reads them (interactions, customer-events, churn-alerts).
    probes = set.intersection(*(set(hop) for hop in latency.hop.values()))
    floor = [sum(hop[n] for hop in latency.hop.values()) for n in probes]
    for name, fraction in (("p50", 0.50), ("p99", 0.99)):
        value = nearest_rank(latency.total, fraction) * 1000
        ceiling = nearest_rank(floor, fraction) * 1000
        line(
            "alert",
            f"publish → churn-alerts {name}, {len(latency.total)} alerts",
            value,
            "ms",
            ceiling=ceiling,
            target=f"(ceiling: its 3 Kafka hops alone, {ceiling:,.0f} ms)"
            + ("  target p99 <= 200 ms" if name == "p99" else ""),
        )
    print(
        f"#         {LABEL[kind]} (the faster above), {LOAD_RATE:,}/s background load, a "
        f"trigger every {TRIGGER_INTERVAL * 1000:.0f} ms; max {max(latency.total) * 1000:,.0f} "
        f"ms; {latency.missing} missing, {latency.premature} premature"
    )
    stages = ", ".join(
        f"{name} {nearest_rank(values, 0.5) * 1000:.0f} / {nearest_rank(values, 0.99) * 1000:.0f}"
        for name, values in latency.stages.items()
        if values
    )
    print(f"#         stages p50 / p99 ms: {stages}")
    hops = ", ".join(
        f"{hop} ({wait} ms) {nearest_rank(list(latency.hop[hop].values()), 0.5) * 1000:.0f} / "
        f"{nearest_rank(list(latency.hop[hop].values()), 0.99) * 1000:.0f}"
        for hop, wait in HOPS.items()
    )
    print(f"#         one Kafka hop p50 / p99 ms by consumer fetch_max_wait: {hops}")
    print(
        f"#         CPU-s over the {latency.seconds:.1f} s of triggers: "
        f"{cpu_text(latency.cpu, latency.seconds)}"
    )


def report_logs(live: Live) -> None:
    """What the roles logged at WARNING or above (known only once they stopped): each
    distinct message (ids and numbers blurred) once, with its count."""
    counts: dict[str, tuple[int, str]] = {}
    for text in live.logs:
        shape = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", text)
        n, first = counts.get(shape, (0, text))
        counts[shape] = (n + 1, first)
    for n, first in sorted(counts.values(), key=lambda entry: -entry[0])[:4]:
        shown = first if len(first) <= 160 else first[:157] + "..."
        print(f"#         logged {n}x: {shown}")


# --- progress -----------------------------------------------------------------------------


@dataclass
class Progress:
    ingested: float
    """Seconds until every published interaction was consumed (stored or dead-lettered)."""
    relayed: float
    """Seconds until the relay had published every stored event."""
    caught_up: float
    """Seconds until the read models applied every stored event."""


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, int, int, int, int]:
    """(consumed, stored, applied, relayed position, last notification id), as
    `infra.live._counts` plus the relay's position."""
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(notification_id + 1), 0) FROM positions"
        "        WHERE application_name LIKE 'ingest:%%'),"
        " (SELECT count(*) FROM customer_events),"
        " (SELECT coalesce(sum(applied_version), 0) FROM read_models),"
        " (SELECT coalesce(max(notification_id), 0) FROM positions"
        "        WHERE application_name LIKE 'relay:customer-events%%'),"
        " (SELECT coalesce(max(notification_id), 0) FROM customer_events)"
    ).fetchone()
    assert row is not None
    consumed, stored, applied, relayed, last = row
    return int(consumed), int(stored), int(applied), int(relayed), int(last)


def wait_caught_up(live: Live, *, started: float, timeout: float) -> Progress:
    """Poll until all `live.published` interactions are consumed and every stored event
    is applied to the read models; times are seconds since `started`."""
    ingested = relayed = None
    deadline = time.monotonic() + timeout
    with psycopg.connect(live.url, autocommit=True) as conn:
        while True:
            live.check()
            consumed, stored, applied, relay_at, last = _counts(conn)
            now = time.perf_counter() - started
            if ingested is None and consumed >= live.published:
                ingested = now
            if ingested is not None and relayed is None and relay_at >= last:
                relayed = now
            if ingested is not None and relayed is not None and applied >= stored:
                return Progress(ingested, relayed, now)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{LABEL[live.kind]}: not caught up after {timeout:.0f} s: consumed "
                    f"{consumed:,}/{live.published:,}, relayed {relay_at:,}/{last:,}, "
                    f"applied {applied:,}/{stored:,}"
                )
            time.sleep(0.1)


def warm_up(live: Live, end: datetime) -> float:
    """Send a small batch through and wait until it is applied: the group joins and
    first connections happen here, not in a timed phase. Returns its seconds."""
    messages = as_messages(simulate(customers=25, seed=5, end=end, prefix="warm-").interactions)
    producer = kafka.producer(live.bootstrap)
    started = time.perf_counter()
    try:
        live.publish(producer, messages)
        producer.flush()
    finally:
        producer.close()
    return wait_caught_up(live, started=started, timeout=120).caught_up


# --- the phases ---------------------------------------------------------------------------


def naive_rate(admin_url: str, items: Sequence[dict[str, Any]]) -> float:
    """Interactions/s of `record([one])` per interaction: one eventsourcing save() each."""
    with scratch(admin_url) as url:
        store = build_store(
            settings_for(url), url, MasterKey.from_text(MASTER_KEY), as_role="eventcrm_app"
        )
        try:
            started = time.perf_counter()
            for item in items:
                outcome = store.record([item])[0]
                assert outcome.status in {"recorded", "duplicate"}, outcome
            return len(items) / (time.perf_counter() - started)
        finally:
            store.close()


def sustained(live: Live, messages: Sequence[Message]) -> tuple[float, Progress, dict[str, float]]:
    """(interactions/s from the first publish until the read models caught up, the
    stages' progress, CPU seconds spent per component meanwhile)."""
    producer = kafka.producer(live.bootstrap)
    cpu_before = live.cpu()
    started = time.perf_counter()
    try:
        live.publish(producer, messages)
        producer.flush()
    finally:
        producer.close()
    progress = wait_caught_up(live, started=started, timeout=max(180.0, len(messages) / 200))
    cpu_after = live.cpu()
    cpu = {k: max(0.0, v - cpu_before.get(k, 0.0)) for k, v in cpu_after.items()}
    return len(messages) / progress.caught_up, progress, cpu


def cpu_text(cpu: dict[str, float], wall: float) -> str:
    """Each component's CPU seconds, their total and the whole machine's, as shares of
    the cores over `wall` seconds."""
    order = [*ROLES, "kafka-python threads", "bench", "tansu", "postgres"]
    ours = sum(v for k, v in cpu.items() if k != MACHINE)
    cores = os.cpu_count() or 1
    return (
        ", ".join(f"{k} {cpu[k]:.1f}" for k in order if k in cpu)
        + f"; all {ours:.1f} = {ours / (wall * cores):.0%} of {cores} cores"
        + f" (machine busy: {cpu.get(MACHINE, 0.0) / (wall * cores):.0%})"
    )


def report_rate(what: str, rate: float, ceiling: float, naive: float) -> None:
    line(
        "pipeline",
        what,
        rate,
        "interactions/s",
        ceiling=ceiling,
        digits=3,
        target=f"{rate / naive:.2f} × naive; target >= 10,000/s and >= 30 × naive",
    )


def report_cpu(progress: Progress, cpu: dict[str, float], published: int) -> None:
    wall = progress.caught_up
    print(
        f"#         {published:,} published; all consumed at {progress.ingested:.1f} s, "
        f"relayed at {progress.relayed:.1f} s, read models caught up at {wall:.1f} s"
    )
    print(f"#         CPU-s over those {wall:.1f} s: {cpu_text(cpu, wall)}")


@dataclass
class Tap:
    """Reads a topic without a group from its current end; notes, per watched customer,
    the first record `pick` accepts: (its Kafka timestamp, when it arrived here), both
    wall-clock seconds."""

    bootstrap: str
    topic: str
    partitions: int
    watched: set[str]
    pick: Callable[[dict[str, Any]], bool]
    fetch_max_wait_ms: int = 10
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve now, so nothing after this is missed
        self.thread = threading.Thread(target=self._run, name="bench-tap", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                at = time.time()
                for record in records:
                    customer = record.key.decode()
                    if (
                        customer in self.watched
                        and customer not in self.seen
                        and self.pick(orjson.loads(record.value))
                    ):
                        self.seen[customer] = (record.timestamp / 1000, at)
        self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def alert_customer(customer: str, now: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Under the packaged default policy (levels 90 / 95 / 97.5), a customer at churn
    score ~93.6, "watch", no alert: six purchases 75 days apart, the last 330 days ago
    (at risk, not churned); and the trigger, a high-severity complaint now (→ ~95.7, past
    `warning`), which raises an alert at once. Checked against the fold below
    (`alert_scenario_holds`), so a policy change cannot silently empty the benchmark."""
    seq = 0

    def event(kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {
            "event_id": f"{customer}-{seq}",
            "source": "bench",
            "customer_id": customer,
            "kind": kind,
            "occurred_at": at.isoformat(),
            **fields,
        }

    idle, gap = 330, 75
    history = [
        event("registered", now - timedelta(days=idle + gap * 6 + 30), profile={"country": "DE"}),
        *(
            event(
                "purchase",
                now - timedelta(days=days, hours=1),
                amount="50.00",
                currency="EUR",
                order_id=f"o-{customer}-{days}",
            )
            for days in range(idle + gap * 5, idle - 1, -gap)
        ),
    ]
    trigger = event("complaint", now, ticket_id=f"t-{customer}", severity="high")
    return sorted(history, key=lambda e: str(e["occurred_at"])), trigger


def alert_scenario_holds(now: datetime) -> bool:
    """The probe raises no alert before its trigger and one at the trigger, under the
    default policy (the roles run it)."""
    policy = load_policy(default_policy_text())
    history, trigger = alert_customer("probe", now)
    states = []
    for items in (history, [*history, trigger]):
        events = dict(as_histories(items, now=now))["probe"]
        states.append(snapshot(fold("probe", events, policy, as_of=now)).alert_state)
    return states == ["none", "raised"]


@dataclass
class Load:
    """Publishes ordinary interactions at a steady rate from its own thread, as live
    traffic: each stamped with the time it is sent (historical timestamps would make
    the projector's timer catch every customer up on a year of deadlines, a backfill's
    work rather than live traffic's)."""

    live: Live
    items: Sequence[dict[str, Any]]
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def __post_init__(self) -> None:
        self.producer = kafka.producer(self.live.bootstrap)
        self.thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        topic = self.live.names.interactions
        while not self.stop.is_set() and self.sent < len(self.items):
            due = min(len(self.items), int((time.perf_counter() - started) * self.rate))
            now = datetime.now(UTC)
            for n, item in enumerate(self.items[self.sent : due]):
                stamp = (now + timedelta(microseconds=n)).isoformat()
                value = orjson.dumps(item | {"occurred_at": stamp})
                self.producer.send(topic, key=item["customer_id"].encode(), value=value)
            self.sent = max(self.sent, due)
            time.sleep(0.05)  # in bursts: fewer, fuller produce requests
        self.producer.flush()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.producer.close()
        self.live.published += self.sent


HOPS = {"ingest": 100, "projector": FETCH_MAX_WAIT_MS, "this reader": 10}
"""The consumer `fetch_max_wait_ms` on each Kafka hop of an alert's path: the ingest
reads `interactions` with `infra.kafka.consumer`'s 100, the projector
`customer-events` with `streams.app.FETCH_MAX_WAIT_MS`, and the benchmark reads
`churn-alerts` with 10."""


def kafka_hop(bootstrap: str, topic: str, count: int = 60) -> dict[str, dict[int, float]]:
    """Seconds from send + flush to receipt by an assigned consumer, on an idle topic of
    the same broker, per message and per consumer `fetch_max_wait_ms` (`HOPS`)."""
    ensure_topics(bootstrap, [topic], partitions=1)
    tp = TopicPartition(topic, 0)
    readers = {}
    for hop, wait in HOPS.items():
        reader = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait
        )
        reader.assign([tp])
        reader.seek_to_end(tp)
        reader.position(tp)
        readers[hop] = reader
    sent: dict[int, float] = {}
    latencies: dict[str, dict[int, float]] = {hop: {} for hop in readers}
    done = threading.Event()
    deadline = math.inf

    def read(hop: str) -> None:
        while not done.is_set() or len(latencies[hop]) < len(sent):
            for records in readers[hop].poll(timeout_ms=50).values():
                at = time.perf_counter()
                for record in records:
                    n = int(record.value)
                    latencies[hop][n] = at - sent[n]
            if done.is_set() and time.perf_counter() > deadline:
                break

    threads = [threading.Thread(target=read, args=(hop,), daemon=True) for hop in readers]
    for thread in threads:
        thread.start()
    producer = kafka.producer(bootstrap)
    try:
        for n in range(count):
            sent[n] = time.perf_counter()
            producer.send(topic, value=str(n).encode())
            producer.flush()
            time.sleep(0.03 + (n % 7) * 0.005)
    finally:
        producer.close()
        deadline = time.perf_counter() + 5
        done.set()
        for thread in threads:
            thread.join(timeout=10)
        for reader in readers.values():
            reader.close()
    return latencies


@dataclass
class Latency:
    total: list[float]
    """Seconds from each trigger's publish to its alert's arrival here."""
    stages: dict[str, list[float]]
    """The same, split at the trigger's event timestamp in the store, the relay's
    `customer-events` record and the projector's alert record (Kafka timestamps)."""
    hop: dict[str, dict[int, float]]
    """Per hop of `HOPS`, each probe message's hop latency."""
    premature: int
    missing: int
    cpu: dict[str, float]
    """CPU seconds per component while the triggers were sent (`seconds` of them)."""
    seconds: float


def alert_latency(live: Live, end: datetime) -> Latency:
    """Trigger `ALERTS` alerts, one every `TRIGGER_INTERVAL`, under `LOAD_RATE`
    interactions/s of background load, and time each from publish to arrival."""
    now = datetime.now(UTC)
    if not alert_scenario_holds(now):
        raise RuntimeError("the alert probe no longer raises an alert under the default policy")
    customers = [f"alert-{n:05d}" for n in range(ALERTS)]
    setups = {c: alert_customer(c, now) for c in customers}
    load_seconds = 10 + ALERTS * TRIGGER_INTERVAL + 40
    load_customers = max(1, int(LOAD_RATE * load_seconds / PER_CUSTOMER))
    background = simulate(customers=load_customers, seed=13, end=end, prefix="load-").interactions
    names, watched = live.names, set(customers)
    counts = names.partitions()
    alerts = Tap(
        live.bootstrap,
        names.churn_alerts,
        counts[names.churn_alerts],
        watched,
        lambda change: change["kind"] == "alert" and change["to_value"] in {"raised", "escalated"},
    )
    published: dict[str, float] = {}
    producer = kafka.producer(live.bootstrap)
    try:
        live.publish(producer, as_messages([e for history, _ in setups.values() for e in history]))
        producer.flush()
        wait_caught_up(live, started=time.perf_counter(), timeout=120)
        premature = len(alerts.seen)
        relayed = Tap(
            live.bootstrap,
            names.customer_events,
            counts[names.customer_events],
            watched,
            lambda message: (message["event"] or {}).get("kind") == "complaint",
            fetch_max_wait_ms=500,  # only its records' timestamps are used
        )
        load = Load(live, background, LOAD_RATE)
        try:
            time.sleep(3)  # the load reaches its steady state
            hop = kafka_hop(live.bootstrap, f"{names.prefix}probe")
            cpu_before = live.cpu()
            started = time.perf_counter()
            for n, customer in enumerate(customers):
                time.sleep(max(0.0, started + n * TRIGGER_INTERVAL - time.perf_counter()))
                trigger = setups[customer][1] | {"occurred_at": datetime.now(UTC).isoformat()}
                published[customer] = time.time()
                producer.send(
                    names.interactions, key=customer.encode(), value=orjson.dumps(trigger)
                )
                producer.flush()
                live.published += 1
            seconds = time.perf_counter() - started
            cpu = {k: max(0.0, v - cpu_before.get(k, 0.0)) for k, v in live.cpu().items()}
            deadline = time.monotonic() + 30
            while len(alerts.seen) < len(customers) and time.monotonic() < deadline:
                live.check()
                time.sleep(0.1)
        finally:
            load.close()
            relayed.close()
    finally:
        producer.close()
        alerts.close()
    done = [c for c in customers if c in alerts.seen and c in relayed.seen]
    recorded = recorded_at(live, done)
    stages: dict[str, list[float]] = {
        "publish → stored": [recorded[c] - published[c] for c in done],
        "stored → relayed": [relayed.seen[c][0] - recorded[c] for c in done],
        "relayed → alert sent": [alerts.seen[c][0] - relayed.seen[c][0] for c in done],
        "alert sent → received": [alerts.seen[c][1] - alerts.seen[c][0] for c in done],
    }
    total = [alerts.seen[c][1] - published[c] for c in customers if c in alerts.seen]
    missing = len(customers) - len(total)
    return Latency(total, stages, hop, premature, missing, cpu, seconds)


def recorded_at(live: Live, customers: Sequence[str]) -> dict[str, float]:
    """When the ingest recorded each customer's latest event (its eventsourcing event
    timestamp, taken as the aggregate records it, just before the commit)."""
    store = build_store(
        settings_for(live.url), live.url, MasterKey.from_text(MASTER_KEY), as_role="eventcrm_app"
    )
    try:
        return {c: store.stored_events(c)[-1][2]["timestamp"].timestamp() for c in customers}
    finally:
        store.close()


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("kafka", "mode.timers"):  # as `eventcrm` does (infra/main.py)
        logging.getLogger(name).setLevel(logging.ERROR)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    population = simulate(customers=max(1, INTERACTIONS // PER_CUSTOMER), seed=7, end=end)
    items = population.interactions
    unique = {(i["source"], i["event_id"]) for i in items}
    messages = as_messages(items)
    naive_items = simulate(
        customers=max(1, NAIVE // PER_CUSTOMER), seed=31, end=end, prefix="naive-"
    ).interactions[:NAIVE]
    with server() as admin_url, TemporaryDirectory(prefix="eventcrm-bench-") as tmp:
        path = Path(tmp) / "interactions.jsonl"
        path.write_bytes(b"".join(value + b"\n" for _, value in messages))
        print(
            f"# eventcrm pipeline benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} cores; {len(items):,} interactions ({len(unique):,} unique), "
            f"{len(population.fates):,} customers"
        )
        rows_rate, ceiling = max(
            copy_ceiling(admin_url, len(unique), len(population.fates), typical_state_size(path))
            for _ in range(3)
        )
        line(
            "ceiling",
            "raw COPY of the rows the batch writes",
            ceiling,
            "interactions/s",
            ceiling=ceiling,
            target=f"({rows_rate:,.0f} rows/s: events + keys)",
        )
        naive = naive_rate(admin_url, naive_items)
        line(
            "naive",
            f"record([one]) x {len(naive_items):,}: one save() each",
            naive,
            "events/s",
            ceiling=ceiling,
            digits=3,
        )
        with embedded_broker() as broker:
            transport.report(transport.measure(broker.bootstrap))
        print(
            "#         the pipeline moves ~2 messages per interaction through Kafka "
            "(interactions in, customer-events out, plus change messages); the projector "
            "reads customer-events through faust"
        )
        rates: dict[str, float] = {}
        for kind in (k for k in (THREADS, PROCESSES) if k in CONFIGS):
            with running(kind, admin_url, Path(tmp)) as live:
                warm = warm_up(live, end)
                rate, progress, cpu = sustained(live, messages)
            rates[kind] = rate
            report_rate(f"{len(items):,} via Kafka, {LABEL[kind]}", rate, ceiling, naive)
            print(f"#         warm-up (group joins, first batch): {warm:.1f} s, not timed")
            report_cpu(progress, cpu, len(items))
            report_logs(live)
        best = max(rates, key=lambda kind: rates[kind])
        live_items = simulate(
            customers=max(1, INTERACTIONS // PER_CUSTOMER), seed=7, end=end, prefix="live-"
        ).interactions
        with running(best, admin_url, Path(tmp)) as live:
            warm_up(live, end)
            rate, progress, cpu = sustained(live, stamped(live_items))
            latency = alert_latency(live, end)
        report_rate(f"same, stamped as live traffic, {LABEL[best]}", rate, ceiling, naive)
        report_cpu(progress, cpu, len(live_items))
        report_latency(latency, best)
        report_logs(live)


if __name__ == "__main__":
    main()
