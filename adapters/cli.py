"""The `eventcrm` command line. It is handed its services by infra and builds none itself."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import IO, Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.codec import dumps
from adapters.importer import BulkImporter, ImportSummary, LineRejected
from adapters.store import CustomerStore, HistoryEntry
from domain.interactions import interaction_json_schema

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Runtime(Protocol):
    """The wired services a command needs (built by infra's composition root)."""

    @property
    def store(self) -> CustomerStore: ...

    @property
    def importer(self) -> BulkImporter: ...


OpenRuntime = Callable[[], AbstractContextManager[Runtime]]


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
                console.print(f"[red]no such file: {source}[/red]")
                raise typer.Exit(EXIT_USAGE)
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

        progress = Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
            transient=True,
        )
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
    migrate: Callable[[], int],
    sample: Path,
) -> typer.Typer:
    """The command tree, bound to a way of opening the wired services."""
    app = typer.Typer(
        name="eventcrm",
        help="Event-sourced customer-relationship engine.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    err = Console(stderr=True)

    @app.command("migrate")
    def migrate_command() -> None:
        """Create or upgrade the schema (as the owner role); safe to repeat."""
        version = migrate()
        err.print(f"schema at version {version}")

    @app.command("schema")
    def schema_command() -> None:
        """Print the wire contract as JSON Schema, for upstream teams to validate against."""
        print_json(interaction_json_schema())

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

    @app.command("verify")
    def verify_command(
        history: Annotated[bool, typer.Option("--history", help="check every hash chain")] = True,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Check every customer's hash chain; report the first broken link of each."""
        with open_runtime() as runtime:
            report = runtime.store.verify_chains()
        result = {
            "ok": report.ok,
            "customers": report.customers,
            "events": report.events,
            "breaks": [
                {"customer": str(b.customer), "version": b.version, "reason": b.reason}
                for b in report.breaks
            ],
        }
        if as_json:
            print_json(result)
        elif report.ok:
            Console().print(
                f"[green]ok[/green]: {report.events} events of {report.customers} customers, "
                "every chain intact"
            )
        else:
            for b in report.breaks[:20]:
                Console().print(
                    f"[red]broken[/red] customer {b.customer} at v{b.version}: {b.reason}"
                )
        if not report.ok:
            raise typer.Exit(EXIT_FAILURE)

    @app.command("demo")
    def demo_command() -> None:
        """Import the bundled sample into the embedded store and show one customer's history."""
        with open_runtime() as runtime:
            summary, _ = run_import(
                runtime, str(sample), rejects_path=None, console=err, show_progress=err.is_terminal
            )
            _print_summary(summary, None, as_json=False)
            customer_id = "cust-00007"
            _print_history(customer_id, runtime.store.history(customer_id))
            report = runtime.store.verify_chains()
            Console().print(
                f"hash chains: {'intact' if report.ok else 'BROKEN'} "
                f"({report.events} events, {report.customers} customers)"
            )

    return app


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


def _describe(state: dict[str, Any]) -> str:
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
            _describe(s),
            e.chain_hash[:16] + (" ok" if e.chain_ok else " [red]BROKEN[/red]"),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
