"""`eventcrm webhook add|list|remove`: admins subscribe receivers to signed churn-alert
webhooks. The work is in :mod:`adapters.webhooks` (which the HTTP API's admin endpoints
call too); this module reads the options and prints."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Protocol

import typer
from rich.console import Console
from rich.table import Table

from adapters.store import CustomerStore
from adapters.webhooks import (
    add_subscription,
    list_subscriptions,
    new_secret,
    parse_levels,
    remove_subscription,
)
from domain.errors import UsageError


class WebhookRuntime(Protocol):
    @property
    def store(self) -> CustomerStore: ...


def secret_from_env(variable: str) -> str:
    """The signing secret an admin keeps in an environment variable (so it never shows in
    the shell's history or the process list)."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise UsageError(
            f"the environment variable {variable} is unset or empty",
            code="missing_secret",
            hint=f"export {variable}=... with the receiver's signing secret, or leave out"
            " --secret-from-env to have one generated",
        )
    return value


def add_webhook_commands(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[WebhookRuntime]],
    *,
    print_json: Callable[[object], None],
    err: Console,
) -> None:
    webhook = typer.Typer(help="Signed webhooks for churn alerts: add, list, remove.")
    app.add_typer(webhook, name="webhook")

    @webhook.command("add")
    def add_command(
        url: Annotated[str, typer.Argument(help="the receiver's http(s) URL")],
        levels: Annotated[
            str, typer.Option("--levels", help="alert levels to send, e.g. warning,critical")
        ] = "warning,critical",
        secret_env: Annotated[
            str | None,
            typer.Option(
                "--secret-from-env",
                metavar="VAR",
                help="sign with the secret in this environment variable (default: generate one)",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the subscription as JSON")] = (
            False
        ),
    ) -> None:
        """Subscribe a URL to churn alerts at the given levels. A generated secret is printed
        once, alone on the last line: give it to the receiver, it is not shown again."""
        chosen = parse_levels(levels)
        if secret_env is None:
            secret, source = new_secret(), "generated"
        else:
            secret, source = secret_from_env(secret_env), f"env:{secret_env}"
        with open_runtime() as runtime:
            store = runtime.store
            added = add_subscription(
                store.datastore,
                store.master_key,
                url=url,
                levels=chosen,
                secret=secret,
                secret_source=source,
            )
        if as_json:
            print_json({**added.to_dict(), "secret": secret if secret_env is None else None})
            return
        err.print(f"webhook {added.id} added: {added.url} ({', '.join(added.levels)})")
        if secret_env is None:
            err.print("its signing secret (shown once; the receiver verifies with it):")
            print(secret)

    @webhook.command("list")
    def list_command(
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Every subscription with its state: active or dead (failing for a while), its
        pending and delivered counts and its last error. Secrets are never shown."""
        with open_runtime() as runtime:
            found = list_subscriptions(runtime.store.datastore)
        if as_json:
            print_json([s.to_dict() for s in found])
            return
        if not found:
            err.print("no webhook subscriptions (add one with `eventcrm webhook add URL`)")
            return
        table = Table("id", "url", "levels", "status", "pending", "delivered", "last error")
        for s in found:
            status = (
                f"[red]dead since {s.dead_since:%Y-%m-%d %H:%M}[/red]"
                if s.dead_since
                else (s.status)
            )
            table.add_row(
                str(s.id),
                s.url,
                ",".join(s.levels),
                status,
                str(s.pending),
                str(s.delivered),
                s.last_error or "",
            )
        Console().print(table)
        dead = [s for s in found if s.status == "dead"]
        if dead:
            err.print(
                f"[red]{len(dead)} dead endpoint(s): their deliveries are kept and retried;"
                " fix the receiver or remove the subscription[/red]"
            )

    @webhook.command("remove")
    def remove_command(
        ref: Annotated[str, typer.Argument(help="the subscription's id (or its URL)")],
    ) -> None:
        """Remove a subscription and its undelivered deliveries."""
        with open_runtime() as runtime:
            removed = remove_subscription(runtime.store.datastore, ref)
        dropped = f"; {removed.pending} undelivered dropped" if removed.pending else ""
        err.print(f"webhook {removed.id} removed: {removed.url}{dropped}")
