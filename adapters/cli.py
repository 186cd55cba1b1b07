"""The `eventcrm` command line. It is handed its services by infra and builds none itself."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, Literal, Protocol

import orjson
import typer
from kafka import KafkaConsumer, KafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.auditcli import add_audit_commands
from adapters.checker import Broker
from adapters.churncli import add_churn_commands
from adapters.codec import dumps
from adapters.handlers import NoOpenAlertError, act_on_alert
from adapters.identitycli import add_identity_commands
from adapters.importer import BulkImporter, ImportSummary, LineRejected
from adapters.outbound import load_schema, topic_of
from adapters.populations import simulate_population
from adapters.readmodels import ReadModelStore, rebuild
from adapters.readside import Arrival, ProjectionReader
from adapters.simulate import simulate, start_of_day
from adapters.store import CustomerNotFoundError, CustomerStore, HistoryEntry
from adapters.tokencli import add_token_commands
from adapters.tokens import TokenStore
from adapters.topics import TopicNames
from adapters.webhookcli import add_webhook_commands
from domain.alerts import AlertAction
from domain.customer import InvalidAlertActionError
from domain.errors import UsageError
from domain.interactions import interaction_json_schema
from projections import ReplayStep, Snapshot
from projections.vocabulary import TIERS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Runtime(Protocol):
    """The wired services a command needs (built by infra's composition root)."""

    @property
    def store(self) -> CustomerStore: ...

    @property
    def importer(self) -> BulkImporter: ...

    @property
    def reader(self) -> ProjectionReader: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def read_models(self) -> ReadModelStore: ...

    @property
    def policy_text(self) -> str: ...

    @property
    def tokens(self) -> TokenStore: ...


OpenRuntime = Callable[[], AbstractContextManager[Runtime]]


class KafkaAccess(Protocol):
    """Kafka clients for the upstream-side and ops-side tools (built by infra)."""

    @property
    def topics(self) -> TopicNames: ...

    def producer(self) -> KafkaProducer: ...

    def reader(self, topic: str, *, from_beginning: bool) -> KafkaConsumer: ...


OpenKafka = Callable[[], AbstractContextManager[KafkaAccess]]


class DemoResult(Protocol):
    """What the streaming demo measured and found (built by infra)."""

    published: int
    ingest_seconds: float
    caught_up_seconds: float
    as_of: datetime
    views: list[dict[str, Any]]
    replay_customer: str | None
    replay: list[ReplayStep]


RunDemo = Callable[[int, Callable[[str, int, int], None]], DemoResult]


def _progress(console: Console, label: str, *, bar: bool = True) -> Progress:
    """A transient progress line on stderr, shown only on a terminal."""
    columns = [
        TextColumn(label),
        *([BarColumn()] if bar else []),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, console=console, disable=not console.is_terminal, transient=True)


def _json_default(value: object) -> Any:
    return str(value)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, default=_json_default, indent=2, ensure_ascii=False) + "\n")


def history_as_dict(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "position": entry.position,
        "event": entry.topic.rsplit(".", 1)[-1],
        "chain_hash": entry.chain_hash,
        "previous_hash": entry.previous_hash,
        "chain_ok": entry.chain_ok,
        "broken": entry.broken or not entry.chain_ok,
        "state": entry.state,
    }


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    yield from handle


def run_import(
    runtime: Runtime,
    source: str,
    *,
    rejects_path: Path | None,
    console: Console,
    show_progress: bool,
) -> tuple[ImportSummary, int]:
    """Import a JSON-lines file (or `-` for stdin) with progress; write rejects beside it."""
    written = 0
    with ExitStack() as stack:
        if source == "-":
            handle: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            path = Path(source)
            if not path.is_file():
                raise UsageError(
                    f"no such file: {source}",
                    code="file_error",
                    hint="name a JSON-lines file of interactions, or - for stdin",
                )
            handle = stack.enter_context(path.open("rb"))
            total = _count_lines(path)
        rejects = stack.enter_context(rejects_path.open("wb")) if rejects_path else None

        def on_reject(rejected: LineRejected) -> None:
            nonlocal written
            written += 1
            if rejects is not None:
                rejects.write(
                    dumps(
                        {
                            "line": rejected.line,
                            "rejections": [r.as_dict() for r in rejected.rejections],
                            "raw": rejected.raw.decode("utf-8", errors="replace"),
                        }
                    )
                    + b"\n"
                )
            if written <= 5:
                first = rejected.rejections[0]
                console.print(
                    f"[yellow]line {rejected.line}: {first.code}"
                    f"{' ' + first.field if first.field else ''}: {first.message}[/yellow]"
                )

        progress = _progress(console, "importing")
        if not show_progress:
            progress.disable = True
        with progress:
            task = progress.add_task("import", total=total)
            summary = runtime.importer.run(
                _lines(handle),
                on_progress=lambda done: progress.update(task, completed=done),
                on_reject=on_reject,
                expected_lines=total,
            )
    return summary, written


def build_cli(
    open_runtime: OpenRuntime,
    *,
    open_kafka: OpenKafka,
    migrate: Callable[[], int],
    serve: Callable[[set[str], str], None],
    demo: RunDemo,
    sample: Path,
    clock: Callable[[], datetime],
    on_debug: Callable[[bool], None] = lambda requested: None,
    broker: Callable[[], Broker | None] = lambda: None,
) -> typer.Typer:
    """The command tree, bound to a way of opening the wired services. ``clock`` is the
    process's one clock, for the commands that open no services (`simulate`); the others
    read it from their runtime. ``on_debug`` hears the global `--debug` flag (infra
    reports errors, with or without a traceback); ``broker`` says where the topics are,
    if a broker is configured (`verify` then counts them)."""
    app = typer.Typer(
        name="eventcrm",
        help="Event-sourced customer-relationship engine.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    err = Console(stderr=True)

    _add_options(app, on_debug)

    @app.command("migrate")
    def migrate_command() -> None:
        """Create or upgrade the schema (as the owner role); safe to repeat."""
        version = migrate()
        err.print(f"schema at version {version}")

    _add_schema(app)

    @app.command("import")
    def import_command(
        file: Annotated[
            str, typer.Argument(help="JSON-lines file of interactions, or - for stdin")
        ],
        rejects: Annotated[
            Path | None, typer.Option(help="where bad lines go (default: FILE.rejects.jsonl)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ) -> None:
        """Bulk-import historical interactions straight into the store."""
        rejects_path = rejects or (Path(f"{file}.rejects.jsonl") if file != "-" else None)
        with open_runtime() as runtime:
            summary, _ = run_import(
                runtime,
                file,
                rejects_path=rejects_path,
                console=err,
                show_progress=err.is_terminal and not as_json,
            )
        _print_summary(summary, rejects_path, as_json=as_json)

    @app.command("history")
    def history_command(
        customer_id: Annotated[str, typer.Argument(help="upstream customer id")],
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The customer's immutable history: versions, sources, event ids, hashes."""
        with open_runtime() as runtime:
            entries = runtime.store.history(customer_id)
        if not entries:
            err.print(f"[red]no history for customer {customer_id!r}[/red]")
            raise typer.Exit(EXIT_FAILURE)
        if as_json:
            print_json(
                {"customer_id": customer_id, "events": [history_as_dict(e) for e in entries]}
            )
            return
        _print_history(customer_id, entries)

    add_audit_commands(
        app, open_runtime, open_kafka=open_kafka, broker=broker, print_json=print_json, err=err
    )
    _add_projection_commands(app, open_runtime, err)
    add_churn_commands(
        app, open_runtime, parse_instant=_parse_instant, print_json=print_json, err=err
    )
    add_identity_commands(app, open_runtime, print_json=print_json)
    _add_rebuild(app, open_runtime, err)
    add_webhook_commands(app, open_runtime, print_json=print_json, err=err)
    alerts = _add_alert_commands(app, open_runtime, err)
    _add_kafka_tools(app, alerts, open_kafka, err)
    _add_tools(app, open_runtime, err, sample, demo, clock)
    _add_serve(app, err, serve)
    add_token_commands(app, open_runtime, print_json=print_json, err=err)

    return app


def _add_options(app: typer.Typer, on_debug: Callable[[bool], None]) -> None:
    """Options every command takes, before its name: `eventcrm --debug COMMAND`."""

    @app.callback()
    def options(
        debug: Annotated[
            bool,
            typer.Option("--debug", help="show the traceback of an error (also EVENTCRM_DEBUG=1)"),
        ] = False,
    ) -> None:
        """Event-sourced customer-relationship engine. Errors: docs/errors.md."""
        on_debug(debug)


AsOf = Annotated[
    str | None, typer.Option("--as-of", help="evaluate at this instant (RFC 3339; default now)")
]
KnownAt = Annotated[
    str | None,
    typer.Option(
        "--known-at",
        help="count only events recorded by this instant: what the engine knew then "
        "(RFC 3339; default now; docs/auditing.md)",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
By = Annotated[str, typer.Option("--by", help="who acts (recorded)")]
Why = Annotated[str, typer.Option("--reason", help="why (recorded)")]


@contextmanager
def _known_customer(err: Console, customer_id: str) -> Iterator[None]:
    """Turn an unknown customer into a clear message and exit code 1."""
    try:
        yield
    except CustomerNotFoundError:
        err.print(f"[red]no history for customer {customer_id!r}[/red]")
        raise typer.Exit(EXIT_FAILURE) from None


def _as_of(runtime: Runtime, text: str | None) -> datetime:
    return _parse_instant(text) if text else runtime.clock()


def _add_schema(app: typer.Typer) -> None:
    @app.command("schema")
    def schema_command(
        topic: Annotated[
            str | None,
            typer.Option(
                "--topic",
                help="an outbound topic (churn-alerts, tier-changes, lifecycle-changes,"
                " customer-events, interactions.dlq): its message's JSON Schema",
            ),
        ] = None,
        version: Annotated[
            int | None, typer.Option("--version", min=1, help="that version (default latest)")
        ] = None,
    ) -> None:
        """Print the wire contract as JSON Schema, for upstream teams to validate against;
        with --topic, the schema of what eventcrm publishes there (docs/outbound.md)."""
        if topic is None:
            print_json(interaction_json_schema())
            return
        print_json(load_schema(topic_of(topic), version))


def _known_at(text: str | None) -> datetime | None:
    return _parse_instant(text) if text else None


def _add_projection_commands(app: typer.Typer, open_runtime: OpenRuntime, err: Console) -> None:
    """Tier, stage and churn, folded from the store (no pipeline needed)."""

    @app.command("customer")
    def customer_command(
        customer_id: Annotated[str, typer.Argument(help="upstream customer id")],
        as_of: AsOf = None,
        known_at: KnownAt = None,
        as_json: AsJson = False,
    ) -> None:
        """Tier, lifecycle stage, churn score and level, alert state, and why."""
        with open_runtime() as runtime, _known_customer(err, customer_id):
            view = runtime.reader.customer(
                customer_id, as_of=_as_of(runtime, as_of), known_at=_known_at(known_at)
            )
        if as_json:
            print_json(view.to_dict())
            return
        _print_snapshot(view)

    @app.command("replay")
    def replay_command(
        customer_id: Annotated[str, typer.Argument(help="upstream customer id")],
        as_of: AsOf = None,
        known_at: KnownAt = None,
        as_json: AsJson = False,
    ) -> None:
        """The fold step by step: each event (and each time-driven change at its own
        instant), the state after it, the changes it caused and why; each event with
        when it was recorded, late arrivals marked."""
        with open_runtime() as runtime, _known_customer(err, customer_id):
            steps, times = runtime.reader.timed_replay(
                customer_id, as_of=_as_of(runtime, as_of), known_at=_known_at(known_at)
            )
        if as_json:
            print_json(
                {
                    "customer_id": customer_id,
                    "known_at": known_at and _parse_instant(known_at).isoformat(),
                    "steps": [_timed_step(s, times) for s in steps],
                }
            )
            return
        _print_replay(customer_id, steps, times)

    @app.command("export")
    def export_command(
        as_of: AsOf = None,
        known_at: KnownAt = None,
        fmt: Annotated[
            ExportFormat, typer.Option("--format", help="csv or jsonl")
        ] = ExportFormat.csv,
        out: Annotated[Path | None, typer.Option(help="output file (default stdout)")] = None,
    ) -> None:
        """One row per customer: tier, stage, churn, alert, revenue, last purchase."""
        with open_runtime() as runtime, ExitStack() as stack:
            instant = _as_of(runtime, as_of)
            sink: IO[str] = stack.enter_context(out.open("w", newline="")) if out else sys.stdout
            total = runtime.store.customer_count()
            progress = stack.enter_context(_progress(err, "exporting"))
            task = progress.add_task("export", total=total)
            started = time.perf_counter()
            count = write_export(
                runtime.reader.all_customers(as_of=instant, known_at=_known_at(known_at)),
                sink,
                fmt,
                progress,
                task,
            )
            elapsed = time.perf_counter() - started
        err.print(
            f"exported {count} customers as of {instant:%Y-%m-%d %H:%M} UTC "
            f"({count / max(elapsed, 1e-9):,.0f} customers/s)"
        )


def _add_rebuild(app: typer.Typer, open_runtime: OpenRuntime, err: Console) -> None:
    @app.command("rebuild")
    def rebuild_command(
        as_of: Annotated[str | None, typer.Option("--as-of", hidden=True)] = None,
    ) -> None:
        """Recompute every read model from the store, as of now, and swap them in at
        once: readers never see old and new rows mixed, and what the projector writes
        meanwhile is kept (safe while the pipeline runs)."""
        if as_of is not None:
            err.print(
                f"[red]rebuild refuses --as-of {as_of}[/red]: the read models are the live "
                "view, evaluated now and moved forward by the projector. For every customer "
                f"as of that instant, run `eventcrm export --as-of {as_of}`."
            )
            raise typer.Exit(EXIT_USAGE)
        with open_runtime() as runtime, _progress(err, "rebuilding") as progress:
            task = progress.add_task("rebuild", total=runtime.store.customer_count())
            instant = runtime.clock()
            count = rebuild(
                runtime.read_models,
                runtime.store,
                runtime.reader.policy,
                as_of=instant,
                on_progress=lambda done: progress.update(task, completed=done),
            )
        err.print(
            f"rebuilt {count} read models as of {instant:%Y-%m-%d %H:%M:%S} UTC, swapped in at once"
        )


Population = Literal["personas", "bgnbd", "pareto-nbd", "bgnbd-frequent"]


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


EXPORT_COLUMNS = (
    "customer_id",
    "tier",
    "lifecycle_stage",
    "churn_score",
    "churn_level",
    "alert_state",
    "alert_id",
    "last_purchase_at",
    "net_revenue_base",
    "base_currency",
    "purchase_count",
    "stage_entered_at",
    "policy_version",
    "evaluated_at",
    "merged_into",
)


def write_export(
    views: Iterator[Snapshot], sink: IO[str], fmt: ExportFormat, progress: Progress, task: Any
) -> int:
    """Write snapshots as CSV or JSON lines; returns how many."""
    count = 0
    writer = csv.writer(sink) if fmt is ExportFormat.csv else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    for view in views:
        row = view.to_dict()
        if writer is not None:
            writer.writerow(["" if row.get(c) is None else row[c] for c in EXPORT_COLUMNS])
        else:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
        if count % 1000 == 0:
            progress.update(task, completed=count)
    return count


def _add_alert_commands(app: typer.Typer, open_runtime: OpenRuntime, err: Console) -> typer.Typer:
    """Ops' view of churn alerts (folded from the store) and their actions on them."""
    alerts = typer.Typer(help="Churn alerts: list open ones; acknowledge, snooze or resolve.")
    app.add_typer(alerts, name="alerts")

    @alerts.command("list")
    def list_command(
        as_of: AsOf = None, known_at: KnownAt = None, as_json: AsJson = False, limit: int = 50
    ) -> None:
        """Open alerts, most at risk first, with their top reasons."""
        with open_runtime() as runtime:
            views = [
                v
                for v in runtime.reader.all_customers(
                    as_of=_as_of(runtime, as_of), known_at=_known_at(known_at)
                )
                if v.alert_open
            ]
        views.sort(key=lambda v: (-v.churn_score, v.customer_id))
        if as_json:
            print_json([v.to_dict() for v in views[:limit]])
            return
        _print_alerts([v.to_dict() for v in views[:limit]], total=len(views))

    def act(
        action: AlertAction, customer_id: str, by: str, reason: str, until: datetime | None
    ) -> None:
        with open_runtime() as runtime, _known_customer(err, customer_id):
            try:
                acted = act_on_alert(
                    runtime.store,
                    runtime.reader,
                    runtime.clock,
                    customer_id,
                    action=action,
                    by=by,
                    reason=reason,
                    until=until,
                )
            except NoOpenAlertError as exc:
                err.print(f"[yellow]{exc.message}[/yellow]")
                raise typer.Exit(EXIT_FAILURE) from None
            except InvalidAlertActionError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(EXIT_USAGE) from None
        Console().print(f"{acted.alert_id} {action} by {by}: alert now {acted.state_after}")

    @alerts.command("ack")
    def ack_command(customer_id: str, by: By, reason: Why = "") -> None:
        """Acknowledge the customer's open alert."""
        act("acknowledged", customer_id, by, reason, None)

    @alerts.command("snooze")
    def snooze_command(
        customer_id: str,
        by: By,
        until: Annotated[str, typer.Option(help="RFC 3339 instant the snooze ends")],
        reason: Why = "",
    ) -> None:
        """Snooze the customer's open alert until an instant."""
        act("snoozed", customer_id, by, reason, _parse_instant(until))

    @alerts.command("resolve")
    def resolve_command(customer_id: str, by: By, reason: Why = "") -> None:
        """Resolve the customer's open alert by hand."""
        act("resolved", customer_id, by, reason, None)

    return alerts


def _add_kafka_tools(
    app: typer.Typer, alerts: typer.Typer, open_kafka: OpenKafka, err: Console
) -> None:
    """What an upstream system and an ops console do with Kafka."""

    @app.command("publish")
    def publish_command(
        file: Annotated[str, typer.Argument(help="JSON-lines interactions, or - for stdin")],
    ) -> None:
        """Publish JSON lines to the interactions topic, as an upstream system would
        (key = customer_id; lines are sent as they are, bad ones included)."""
        with open_kafka() as kafka, ExitStack() as stack:
            handle: IO[bytes] = (
                sys.stdin.buffer if file == "-" else stack.enter_context(Path(file).open("rb"))
            )
            producer = kafka.producer()
            stack.callback(producer.close)
            progress = stack.enter_context(_progress(err, "publishing", bar=False))
            task = progress.add_task("publish", total=None)
            started = time.perf_counter()
            count = 0
            for line in handle:
                value = line.strip()
                if not value:
                    continue
                producer.send(kafka.topics.interactions, key=_customer_key(value), value=value)
                count += 1
                if count % 1000 == 0:
                    progress.update(task, completed=count)
            producer.flush()
            elapsed = time.perf_counter() - started
        err.print(f"published {count} messages ({count / max(elapsed, 1e-9):,.0f}/s)")

    @alerts.command("tail")
    def tail_command(
        as_json: AsJson = False,
        from_beginning: Annotated[
            bool, typer.Option("--from-beginning", help="replay the topic first")
        ] = False,
        limit: Annotated[int, typer.Option(help="stop after this many (0 = never)")] = 0,
    ) -> None:
        """Print churn alerts as they arrive on the churn-alerts topic (Ctrl-C stops)."""
        seen = 0
        with open_kafka() as kafka:
            reader = kafka.reader(kafka.topics.churn_alerts, from_beginning=from_beginning)
            try:
                while not limit or seen < limit:
                    for batch in reader.poll(timeout_ms=500).values():
                        for record in batch:
                            _print_alert_change(record.value, as_json=as_json)
                            seen += 1
            except KeyboardInterrupt:
                pass
            finally:
                reader.close()


def _customer_key(value: bytes) -> bytes | None:
    try:
        customer = orjson.loads(value).get("customer_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return customer.encode() if isinstance(customer, str) else None


def _print_alert_change(value: bytes, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(value.decode() + "\n")
        sys.stdout.flush()
        return
    change = orjson.loads(value)
    reason = change["reasons"][0]["message"] if change.get("reasons") else ""
    Console().print(
        f"{change['effective_at']} {change['customer_id']} alert {change['from_value']}→"
        f"{change['to_value']} {change.get('alert_id') or ''} {reason}"
    )


def _add_tools(
    app: typer.Typer,
    open_runtime: OpenRuntime,
    err: Console,
    sample: Path,
    demo: RunDemo,
    clock: Callable[[], datetime],
) -> None:
    """Upstream-side tools and the demo."""

    @app.command("simulate")
    def simulate_command(
        customers: Annotated[int, typer.Option(min=1, help="population size")] = 3000,
        seed: Annotated[int, typer.Option(help="same seed, same output")] = 7,
        days: Annotated[int, typer.Option(min=1, help="length of the simulated history")] = 365,
        end: Annotated[
            str | None,
            typer.Option(help="last instant simulated, RFC 3339 (default: today 00:00 UTC)"),
        ] = None,
        out: Annotated[Path | None, typer.Option(help="JSON-lines output (default stdout)")] = None,
        fates: Annotated[
            Path | None, typer.Option(help="also write each customer's true fate (JSON lines)")
        ] = None,
        population: Annotated[
            Population,
            typer.Option(
                "--population",
                help="personas (every kind of interaction) or a buy-till-you-die model "
                "(purchases only: bgnbd, pareto-nbd, bgnbd-frequent)",
            ),
        ] = "personas",
    ) -> None:
        """Write deterministic synthetic interactions, as upstream systems would send them."""
        until = _parse_instant(end) if end else start_of_day(clock())
        if population == "personas":
            result = simulate(customers=customers, seed=seed, end=until, days=days)
        else:
            result = simulate_population(
                population, customers=customers, seed=seed, end=until, days=days,
                acquisition_days=max(1, days // 2),
            )  # fmt: skip
        with ExitStack() as stack:
            sink = stack.enter_context(out.open("wb")) if out else sys.stdout.buffer
            for item in result.interactions:
                sink.write(dumps(item) + b"\n")
            if fates:
                with fates.open("wb") as handle:
                    for fate in result.fates:
                        handle.write(dumps(fate.to_dict()) + b"\n")
        err.print(
            f"{len(result.interactions)} interactions of {customers} customers, "
            f"{days} days to {until:%Y-%m-%d %H:%M} UTC"
        )

    @app.command("demo")
    def demo_command(
        customers: Annotated[int, typer.Option(min=10, help="simulated population")] = 2000,
        offline: Annotated[
            bool, typer.Option("--offline", help="no Kafka: bulk-import the bundled sample")
        ] = False,
    ) -> None:
        """The whole pipeline on the embedded default: simulate a year of customers,
        publish them through Kafka, wait for the projections, show what eventcrm made
        of it. Leaves nothing running."""
        if offline:
            _offline_demo(open_runtime, err, sample)
            return
        with _progress(err, "{task.description}") as progress:
            tasks: dict[str, Any] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            result = demo(customers, report)
        views = result.views
        Console().print(
            f"published {result.published:,} interactions of {customers:,} simulated customers; "
            f"ingested in {result.ingest_seconds:.1f} s "
            f"({result.published / max(result.ingest_seconds, 1e-9):,.0f}/s), "
            f"projections caught up after {result.caught_up_seconds:.1f} s"
        )
        _print_distribution(views, result.as_of)
        alerts = sorted(
            (v for v in views if v["alert_open"]), key=lambda v: -float(v["churn_score"])
        )
        _print_alerts(alerts[:10], total=len(alerts))
        if result.replay_customer:
            steps = result.replay
            shown = f"last 15 of {len(steps)} steps" if len(steps) > 15 else "every step"
            Console().print(f"audited replay of {result.replay_customer} ({shown}):")
            _print_replay(result.replay_customer, steps[-15:])


SERVE_ROLES = ("ingest", "relay", "project", "webhooks", "api")


def _add_serve(app: typer.Typer, err: Console, serve: Callable[[set[str], str], None]) -> None:
    @app.command("serve")
    def serve_command(
        role: Annotated[
            list[str] | None,
            typer.Option(
                "--role",
                help="ingest, relay, project, webhooks or api (repeatable; default all)",
            ),
        ] = None,
        http: Annotated[
            str, typer.Option("--http", help="where the api role listens (HOST:PORT)")
        ] = "127.0.0.1:8080",
    ) -> None:
        """Run the pipeline roles and the HTTP API until SIGTERM/SIGINT (embedded
        PostgreSQL and broker unless EVENTCRM_DATABASE_URL / EVENTCRM_KAFKA_BOOTSTRAP
        are set; the api role alone needs no broker)."""
        chosen = set(role or SERVE_ROLES)
        unknown = chosen - set(SERVE_ROLES)
        if unknown:
            err.print(f"[red]unknown role(s): {', '.join(sorted(unknown))}[/red]")
            raise typer.Exit(EXIT_USAGE)
        host, _, port = http.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            err.print(f"[red]--http {http!r} is not HOST:PORT[/red] (e.g. 127.0.0.1:8080)")
            raise typer.Exit(EXIT_USAGE)
        serve(chosen, http)


def _offline_demo(open_runtime: OpenRuntime, err: Console, sample: Path) -> None:
    """Bulk-import the bundled sample and show the projections folded from the store."""
    with open_runtime() as runtime:
        summary, _ = run_import(
            runtime, str(sample), rejects_path=None, console=err, show_progress=err.is_terminal
        )
        _print_summary(summary, None, as_json=False)
        snapshots = list(runtime.reader.all_customers(as_of=SAMPLE_AS_OF))
        views = [v.to_dict() for v in snapshots]
        _print_distribution(views, SAMPLE_AS_OF)
        alerts = sorted(
            (v for v in views if v["alert_open"]), key=lambda v: -float(v["churn_score"])
        )
        _print_alerts(alerts[:8], total=len(alerts))
        customer_id = alerts[0]["customer_id"] if alerts else views[0]["customer_id"]
        history = runtime.store.history(customer_id)
        _print_history(customer_id, history[-12:])
        if len(history) > 12:
            Console().print(f"(last 12 of {len(history)} events: `eventcrm history {customer_id}`)")
        _print_snapshot(runtime.reader.customer(customer_id, as_of=SAMPLE_AS_OF))
        report = runtime.store.verify_chains()
        Console().print(
            f"hash chains: {'intact' if report.ok else 'BROKEN'} "
            f"({report.events} events, {report.customers} customers)"
        )


SAMPLE_AS_OF = datetime(2026, 1, 15, tzinfo=UTC)
"""The bundled sample's history ends on 2026-01-01; the demo looks at it two weeks later."""


def _print_distribution(views: list[dict[str, Any]], as_of: datetime) -> None:
    tiers = Counter(v["tier"] for v in views)
    stages = Counter(v["lifecycle_stage"] for v in views)
    table = Table(title=f"{len(views)} customers as of {as_of:%Y-%m-%d %H:%M} UTC")
    table.add_column("tier")
    table.add_column("customers", justify="right")
    table.add_column("lifecycle stage")
    table.add_column("customers", justify="right")
    tier_rows = [(t, tiers[t]) for t in TIERS if tiers[t]]
    stage_rows = sorted(stages.items(), key=lambda item: -item[1])
    for n in range(max(len(tier_rows), len(stage_rows))):
        tier = tier_rows[n] if n < len(tier_rows) else ("", "")
        stage = stage_rows[n] if n < len(stage_rows) else ("", "")
        table.add_row(tier[0], str(tier[1]), stage[0], str(stage[1]))
    Console().print(table)


def _parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an RFC 3339 instant: {text!r}") from None
    if value.utcoffset() is None:
        raise typer.BadParameter("the instant needs a UTC offset, e.g. 2026-03-03T00:00:00Z")
    return value.astimezone(UTC)


def _print_summary(summary: ImportSummary, rejects_path: Path | None, *, as_json: bool) -> None:
    result = {
        "lines": summary.lines,
        "recorded": summary.recorded,
        "duplicate": summary.duplicate,
        "rejected": summary.rejected,
        "customers_created": summary.customers_created,
        "rejects_file": str(rejects_path) if rejects_path and summary.rejected else None,
    }
    if as_json:
        print_json(result)
        return
    table = Table(title="import", show_header=False)
    for key, value in result.items():
        if value is not None:
            table.add_row(key, str(value))
    Console().print(table)


def _money(value: Decimal, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def _print_snapshot(view: Snapshot) -> None:
    console = Console()
    when = view.evaluated_at.strftime("%Y-%m-%d %H:%M UTC") if view.evaluated_at else "-"
    console.print(f"[bold]{view.customer_id}[/bold] as of {when} (policy {view.policy_version})")
    if view.merged_into is not None:
        console.print(f"merged into [bold]{view.merged_into}[/bold]: its values, its alert")
    table = Table(show_header=False, box=None)
    since = f" since {view.stage_entered_at:%Y-%m-%d}" if view.stage_entered_at else ""
    last = f"{view.last_purchase_at:%Y-%m-%d}" if view.last_purchase_at else "never"
    table.add_row(
        "tier",
        view.tier,
        f"{_money(view.net_revenue_base, view.base_currency)} "
        f"net in window, {view.window_purchase_count} purchases in window",
    )
    table.add_row("stage", view.lifecycle_stage, f"{since.strip()}; last purchase {last}")
    table.add_row("churn", f"{view.churn_score}/100", view.churn_level)
    table.add_row("alert", view.alert_state, view.alert_id or "")
    console.print(table)
    console.print("[bold]why (the latest tier, stage and alert changes)[/bold]")
    for reason in view.reasons:
        if not reason.rule.startswith("churn."):
            console.print(f"  {reason.rule}: {reason.message}")
    console.print(
        f"[bold]churn signals now[/bold] (points add up to the score, {view.churn_score})"
    )
    base, *signals = view.churn_signals or (None,)
    if base is not None:
        console.print(f"  {base.rule} ({base.points}): {base.message}", markup=False)
    for reason in sorted(signals, key=lambda r: -(r.points or 0)):
        if reason is not None:
            console.print(f"  {reason.rule} ({reason.points:+}): {reason.message}", markup=False)


def _timed_step(step: ReplayStep, times: dict[str, Arrival]) -> dict[str, Any]:
    """A replay step's JSON, with when its event was recorded (beside when it occurred)."""
    value = step.to_dict()
    arrival = times.get(step.event_id) if step.event_id is not None else None
    value["recorded_at"] = None if arrival is None else arrival.to_dict()["recorded_at"]
    value["late"] = False if arrival is None else arrival.late
    return value


def _print_replay(
    customer_id: str, steps: list[ReplayStep], times: dict[str, Arrival] | None = None
) -> None:
    table = Table(title=f"replay of {customer_id}")
    columns = ["at (UTC)", "step", "tier", "stage", "churn", "alert", "changes"]
    if times is not None:
        columns.insert(1, "recorded (UTC)")
    for column in columns:
        table.add_column(column, overflow="fold")
    for step in steps:
        s = step.summary
        changes = "; ".join(
            f"{c.kind} {c.from_value}→{c.to_value}"
            + (f" ({c.reasons[0].message})" if c.reasons else "")
            for c in step.changes
        )
        if step.note is not None:
            changes = f"{step.note.message}; {changes}" if changes else step.note.message
        row = [
            f"{step.at:%Y-%m-%d %H:%M}",
            step.kind if step.event_id is None else f"{step.kind} {step.event_id}",
            s.tier,
            s.lifecycle_stage,
            f"{s.churn_score} {s.churn_level}",
            s.alert_state,
            changes,
        ]
        if times is not None:
            arrival = times.get(step.event_id) if step.event_id is not None else None
            recorded = ""
            if arrival is not None and arrival.recorded_at is not None:
                recorded = f"{arrival.recorded_at:%Y-%m-%d %H:%M}" + (
                    " [yellow]LATE[/yellow]" if arrival.late else ""
                )
            row.insert(1, recorded)
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


def _print_alerts(views: list[dict[str, Any]], *, total: int) -> None:
    """Open alerts from snapshot dicts (`Snapshot.to_dict()` or a read model's JSON)."""
    table = Table(title=f"open churn alerts ({total})")
    for column in ("customer", "score", "level", "state", "tier", "stage", "top reasons"):
        table.add_column(column, overflow="fold")
    for view in views:
        raising = [
            r
            for r in view.get("churn_signals", ())
            if r["rule"] != "churn.base" and r.get("points") and float(r["points"]) > 0
        ]
        top = sorted(raising, key=lambda r: -float(r["points"]))[:3]
        table.add_row(
            view["customer_id"],
            str(view["churn_score"]),
            view["churn_level"],
            view["alert_state"],
            view["tier"],
            view["lifecycle_stage"],
            "; ".join(f"{r['rule']} +{r['points']}" for r in top),
        )
    Console(width=None if Console().is_terminal else 160).print(table)


def _describe(event: str, state: dict[str, Any]) -> str:
    """One line per stored event, by its type (the state's keys differ per type)."""
    if event == "AlertActionRecorded":
        until = f" until {state['until']}" if state.get("until") is not None else ""
        why = f": {state['reason']}" if state.get("reason") else ""
        action = f"{state.get('alert_id')} {state.get('action')} by {state.get('by')}"
        return f"ops: alert {action}{until}{why}"
    if "broken" in state:
        return f"BROKEN: {state['broken']}"
    if event == "Forgotten":
        return f"forgotten (personal data erased) by {state.get('by')}: {state.get('reason')}"
    if "kind" not in state:
        return f"customer {state.get('customer_id')} created"
    parts = [str(state["kind"])]
    if state.get("amount") is not None:
        parts.append(f"{state['amount']} {state['currency']}")
    facts = state.get("facts") or {}
    parts.extend(f"{k}={v}" for k, v in facts.items() if not isinstance(v, dict))
    personal = state.get("personal")
    if personal:
        parts.append(f"personal={json.dumps(personal, ensure_ascii=False)}")
    elif state.get("personal_erased"):
        parts.append("personal=<erased>")
    return " ".join(parts)


def _print_history(customer_id: str, entries: list[HistoryEntry]) -> None:
    table = Table(title=f"history of {customer_id}", expand=False)
    for column in ("v", "occurred at (UTC)", "source / event id", "what", "chain hash"):
        table.add_column(column, overflow="fold")
    for e in entries:
        s = e.state
        occurred = s.get("occurred_at")
        table.add_row(
            str(e.version),
            occurred.strftime("%Y-%m-%d %H:%M") if occurred is not None else "",
            f"{s.get('source', '')} / {s.get('event_id', '')}" if "source" in s else "",
            _describe(e.topic.rsplit(".", 1)[-1], s),
            e.chain_hash[:16] + (" ok" if e.chain_ok and not e.broken else " [red]BROKEN[/red]"),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
