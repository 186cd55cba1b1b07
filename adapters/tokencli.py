"""`eventcrm token create|list|revoke`: API tokens (docs/roles-and-tokens.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.table import Table

from adapters.tokens import ROLES, TokenStore


class TokenRuntime(Protocol):
    @property
    def tokens(self) -> TokenStore: ...


def add_token_commands(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[TokenRuntime]],
    *,
    print_json: Callable[[object], None],
    err: Console,
) -> None:
    tokens = typer.Typer(help="API tokens: create (printed once), list, revoke.")
    app.add_typer(tokens, name="token")

    @tokens.command("create")
    def create_command(
        role: Annotated[str, typer.Option("--role", help=f"one of {', '.join(ROLES)}")],
        name: Annotated[
            str, typer.Option("--name", help="who holds it (recorded on what it does)")
        ],
    ) -> None:
        """Create a token; it is printed once, alone on the last line, and stored hashed."""
        with open_runtime() as runtime:
            token = runtime.tokens.create(name=name, role=role)
        err.print(f"token {name!r} ({role}) created; it is shown once, keep it secret:")
        sys.stdout.write(token + "\n")

    @tokens.command("list")
    def list_command(
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ) -> None:
        """Names, roles, creation, last use and revocation; never the tokens."""
        with open_runtime() as runtime:
            infos = runtime.tokens.list()
        if as_json:
            print_json([info.to_dict() for info in infos])
            return
        table = Table(title=f"API tokens ({len(infos)})")
        for column in ("name", "role", "created", "last used", "revoked"):
            table.add_column(column)

        def when(value: Any) -> str:
            return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"

        for info in infos:
            table.add_row(
                info.name,
                info.role,
                when(info.created_at),
                when(info.last_used_at),
                when(info.revoked_at),
            )
        Console().print(table)

    @tokens.command("revoke")
    def revoke_command(
        name: Annotated[str, typer.Argument(help="the token's name")],
    ) -> None:
        """Revoke a token: every API process refuses it from the next request on."""
        with open_runtime() as runtime:
            runtime.tokens.revoke(name)
        err.print(f"token {name!r} revoked")
