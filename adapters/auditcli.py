"""`eventcrm verify`, `checkpoint`, `forget` and `erasures`: what an auditor runs.

The work is in :mod:`adapters.checker`, :mod:`adapters.checkpoint` and
:mod:`adapters.erasure`; this module reads the options, and prints (docs/verify.md,
docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from adapters.checker import Broker, verify
from adapters.checkpoint import compare as compare_checkpoint
from adapters.checkpoint import load_file as load_checkpoint
from adapters.checkpoint import publish as publish_checkpoint
from adapters.checkpoint import take, write_file
from adapters.erasure import Eraser, Receipt, Tombstones
from adapters.readmodels import ReadModelStore
from adapters.readside import ProjectionReader
from adapters.store import CustomerNotFoundError, CustomerStore
from adapters.topics import TopicNames
from domain.errors import UsageError
from projections.identity import links

EXIT_FAILURE = 1

AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


class AuditRuntime(Protocol):
    @property
    def store(self) -> CustomerStore: ...

    @property
    def reader(self) -> ProjectionReader: ...

    @property
    def read_models(self) -> ReadModelStore: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...


class AuditKafka(Protocol):
    @property
    def topics(self) -> TopicNames: ...

    def producer(self) -> KafkaProducer: ...


def add_audit_commands(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[AuditRuntime]],
    *,
    open_kafka: Callable[[], AbstractContextManager[AuditKafka]],
    broker: Callable[[], Broker | None],
    print_json: Callable[[object], None],
    err: Console,
) -> None:
    @app.command("verify")
    def verify_command(
        history: Annotated[
            bool, typer.Option("--history", help="also recompute every customer's hash chain")
        ] = False,
        against: Annotated[
            Path | None,
            typer.Option(
                "--against",
                help="with --history: a checkpoint file (`eventcrm checkpoint --out`); "
                "finds deleted, rewritten, removed or inserted history since it",
            ),
        ] = None,
        as_json: AsJson = False,
    ) -> None:
        """Read models complete and equal to a fresh fold of the stored events; keys and
        events agree; with a broker, dead letters on the DLQ topic and positions at the
        topics' ends (and, with --history, every hash chain intact). Exit 1 on any
        finding (docs/verify.md)."""
        if against is not None and not history:
            raise UsageError(
                "--against needs --history",
                code="invalid_option",
                hint="verify --history --against FILE",
            )
        checkpoint = load_checkpoint(against) if against is not None else None
        with open_runtime() as runtime:
            report = verify(
                runtime.store,
                runtime.read_models,
                runtime.reader.policy,
                now=runtime.clock(),
                broker=broker(),
            )
            chains = runtime.store.verify_chains() if history else None
            compared = (
                compare_checkpoint(runtime.store, checkpoint) if checkpoint is not None else None
            )
        ok = report.ok and (chains is None or chains.ok) and (compared is None or compared.ok)
        result = {**report.to_dict(), "ok": ok}
        if chains is not None:
            result["history"] = {
                "customers": chains.customers,
                "events": chains.events,
                "breaks": [
                    {"customer_id": b.customer_id, "version": b.version, "reason": b.reason}
                    for b in chains.breaks
                ],
            }
        if compared is not None:
            result["checkpoint"] = compared.to_dict()
        if as_json:
            print_json(result)
        else:
            print_verify(result)
        if not ok:
            raise typer.Exit(EXIT_FAILURE)

    _add_checkpoint(app, open_runtime, open_kafka=open_kafka, broker=broker, print_json=print_json)
    _add_erasure(
        app, open_runtime, open_kafka=open_kafka, broker=broker, print_json=print_json, err=err
    )


def _add_checkpoint(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[AuditRuntime]],
    *,
    open_kafka: Callable[[], AbstractContextManager[AuditKafka]],
    broker: Callable[[], Broker | None],
    print_json: Callable[[object], None],
) -> None:
    @app.command("checkpoint")
    def checkpoint_command(
        out: Annotated[Path, typer.Option("--out", help="where to write the checkpoint file")],
        as_json: AsJson = False,
    ) -> None:
        """A checkpoint over every customer's chain head (a Merkle root), stored, written
        to FILE for the auditor to keep, and published to the `checkpoints` topic when a
        broker is configured (docs/verify.md)."""
        if out.is_dir():
            raise UsageError(f"--out {out} is a directory", code="file_error", hint="name a file")
        with open_runtime() as runtime:
            checkpoint = take(runtime.store, now=runtime.clock())
        write_file(checkpoint, out)
        published = None
        if broker() is not None:
            with open_kafka() as kafka:
                publish_checkpoint(kafka.producer(), kafka.topics.checkpoints, checkpoint)
                published = kafka.topics.checkpoints
        summary = {**checkpoint.summary(), "file": str(out), "published_to": published}
        if as_json:
            print_json(summary)
            return
        Console().print(
            f"checkpoint {summary['checkpoint_id']}: root {summary['root']} over "
            f"{summary['customers']} customers, {summary['events']} events "
            f"(through notification {summary['position']}); written to {out}"
            + (f", published to {published}" if published else "")
        )


def _add_erasure(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[AuditRuntime]],
    *,
    open_kafka: Callable[[], AbstractContextManager[AuditKafka]],
    broker: Callable[[], Broker | None],
    print_json: Callable[[object], None],
    err: Console,
) -> None:
    @app.command("forget")
    def forget_command(
        customer_id: Annotated[str, typer.Argument(help="upstream customer id")],
        reason: Annotated[str, typer.Option("--reason", help="why (on the receipt)")],
        by: Annotated[str, typer.Option("--by", help="who erases (on the receipt)")],
        as_json: AsJson = False,
    ) -> None:
        """Erase a customer's personal data for good (crypto-shredding) and print the
        receipt; safe to repeat (docs/privacy.md)."""
        with open_runtime() as runtime:
            eraser = Eraser(runtime.store, clock=runtime.clock)
            # A merged pair is one person: erasing either erases both (docs/identity.md).
            merged = merged_with(runtime.reader, customer_id, runtime.clock())
            receipts = []
            for target in [customer_id, *merged]:
                if broker() is not None:
                    with open_kafka() as kafka:
                        producer = kafka.producer()
                        receipts.append(
                            eraser.forget(
                                target,
                                by=by,
                                reason=reason,
                                tombstones=_tombstones(producer, kafka.topics),
                            )
                        )
                else:
                    receipts.append(eraser.forget(target, by=by, reason=reason))
        receipt = receipts[0]
        if as_json:
            print_json(
                {
                    **receipt.to_dict(),
                    "already_erased": receipt.already,
                    "merged_erased": [
                        {**r.to_dict(), "already_erased": r.already} for r in receipts[1:]
                    ],
                }
            )
            return
        if receipt.already:
            err.print(f"{customer_id} was erased before; its receipt:")
        if merged:
            err.print(f"{customer_id} is merged with {', '.join(merged)}: erased together")
        _print_receipts(receipts)

    @app.command("erasures")
    def erasures_command(as_json: AsJson = False) -> None:
        """Every erasure receipt: what was destroyed, when, by whom, why."""
        with open_runtime() as runtime:
            receipts = Eraser(runtime.store, clock=runtime.clock).receipts()
        if as_json:
            print_json([r.to_dict() for r in receipts])
            return
        _print_receipts(receipts)


def _tombstones(producer: KafkaProducer, topics: TopicNames) -> Tombstones:
    def publish(customer_id: str) -> None:
        producer.send(topics.interactions_dlq, key=customer_id.encode(), value=None)
        producer.flush()

    return Tombstones([topics.interactions_dlq], publish)


def _print_receipts(receipts: list[Receipt]) -> None:
    table = Table(title=f"erasures ({len(receipts)})")
    for column in ("customer", "erased at (UTC)", "by", "reason", "destroyed", "receipt"):
        table.add_column(column, overflow="fold")
    for r in receipts:
        d = r.destroyed
        destroyed = (
            f"data key {d.get('data_key')}; {d.get('events_with_personal_data')} events' "
            f"personal data; {d.get('dead_letters_erased')} dead letters"
            + (f"; tombstones on {', '.join(d['tombstones'])}" if d.get("tombstones") else "")
        )
        table.add_row(
            r.customer_id,
            f"{r.erased_at:%Y-%m-%d %H:%M:%S}",
            r.by,
            r.reason,
            destroyed,
            r.receipt_id,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


def print_verify(result: dict[str, Any]) -> None:
    console = Console()
    failed = {kind: check for kind, check in result["checks"].items() if check["count"]}
    for kind, check in failed.items():
        shown = "; ".join(
            " ".join(f"{key}={value}" for key, value in example.items())
            for example in check["examples"][:3]
        )
        console.print(f"[red]FAIL[/red] {kind}: {check['count']} (e.g. {shown})")
    if not failed:
        console.print(
            f"[green]ok[/green]: each of {result['customers']} stored customers has one read "
            "model, at its latest version, equal to a fresh replay; keys and events agree"
        )
    else:
        console.print(
            f"{result['read_models']} read models, {result['customers']} stored customers"
        )
    topics = result["topics"]
    if topics["checked"]:
        letters, ingest, relay = topics["dead_letters"], topics["ingest"], topics["relay"]
        console.print(
            f"topics: {letters['on_topic']} of {letters['stored']} dead letters on "
            f"{letters['topic']}; ingest consumed {ingest.get('consumed', 0)} of "
            f"{ingest.get('records', 0)} records; relay at notification "
            f"{relay.get('position', '-')} of {relay['last_notification']}"
        )
    else:
        console.print(f"topics: not checked ({topics['reason']})")
    lag = result["lag"]
    console.print(
        f"projector lag: {lag['unapplied_events']} stored events not applied, "
        f"{lag['overdue_timers']} timers overdue (at most {lag['max_overdue_seconds']:.0f} s)"
    )
    history = result.get("history")
    if history is not None:
        if not history["breaks"]:
            console.print(
                f"[green]ok[/green]: {history['events']} events of {history['customers']} "
                "customers, every chain intact"
            )
        for b in history["breaks"][:20]:
            console.print(
                f"[red]broken[/red] customer {b['customer_id']} at v{b['version']}: {b['reason']}"
            )
    checkpoint = result.get("checkpoint")
    if checkpoint is not None:
        cp = checkpoint["checkpoint"]
        if checkpoint["ok"]:
            console.print(
                f"[green]ok[/green]: nothing cut or rewritten since checkpoint {cp['root'][:16]} "
                f"of {cp['created_at']} ({checkpoint['covered_events']} events of "
                f"{checkpoint['covered_customers']} customers)"
            )
        for kind, found in checkpoint["checks"].items():
            for example in found["examples"]:
                console.print(
                    f"[red]{kind}[/red] customer {example['customer_id']} at v{example['version']}"
                )


def merged_with(reader: ProjectionReader, customer_id: str, now: datetime) -> list[str]:
    """The customers a merge in force now links with this one (both sides of a pair)."""
    try:
        events = reader.events(customer_id)
    except CustomerNotFoundError:
        return []
    return sorted({link.partner(customer_id) for link in links(events) if link.active(now)})
