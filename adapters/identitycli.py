"""`eventcrm merge` and `eventcrm unmerge`: ops say two customer ids are one person, or
undo it (docs/identity.md). The link is recorded on both histories by the store; the
projections read it from there."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Annotated, Protocol

import typer
from rich.console import Console

from adapters.readside import ProjectionReader
from adapters.store import CustomerStore
from domain.alerts import IdentityAction
from domain.customer import InvalidIdentityLinkError
from domain.errors import UsageError


class IdentityRuntime(Protocol):
    @property
    def store(self) -> CustomerStore: ...

    @property
    def reader(self) -> ProjectionReader: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...


Survivor = Annotated[str, typer.Argument(help="the customer id that stays")]
Merged = Annotated[str, typer.Argument(help="the customer id merged into it")]
By = Annotated[str, typer.Option("--by", help="who decided (recorded)")]
Why = Annotated[str, typer.Option("--reason", help="why (recorded; required)")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def link(
    runtime: IdentityRuntime,
    action: IdentityAction,
    survivor: str,
    merged: str,
    *,
    by: str,
    reason: str,
) -> dict[str, object]:
    """Record the link and say what it changed; bad requests raise `UsageError`."""
    try:
        versions = runtime.store.record_identity_link(
            action, survivor, merged, by=by, reason=reason
        )
    except InvalidIdentityLinkError as exc:
        hint = {
            "unknown_customer": "check the id with `eventcrm history ID`",
            "already_merged": "unmerge it first",
            "not_merged": "`eventcrm customer MERGED` says what it is merged into",
        }.get(exc.code, "")
        raise UsageError(str(exc), code=exc.code, hint=hint) from None
    now = runtime.clock()
    return {
        "action": action,
        "survivor": survivor,
        "merged": merged,
        "by": by,
        "reason": reason,
        "versions": {survivor: versions[0], merged: versions[1]},
        "customers": {
            c: runtime.reader.customer(c, as_of=now).to_dict() for c in (survivor, merged)
        },
    }


def add_identity_commands(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[IdentityRuntime]],
    *,
    print_json: Callable[[object], None],
) -> None:
    def run(
        action: IdentityAction, survivor: str, merged: str, *, by: str, reason: str, js: bool
    ) -> None:
        with open_runtime() as runtime:
            result = link(runtime, action, survivor, merged, by=by, reason=reason)
        if js:
            print_json(result)
            return
        views = result["customers"]
        assert isinstance(views, dict)
        out = Console()
        word = "merged into" if action == "merged" else "unmerged from"
        out.print(f"{merged} {word} {survivor} by {by}: {reason}")
        for customer_id, v in views.items():
            note = f" (merged into {v['merged_into']})" if "merged_into" in v else ""
            out.print(
                f"  {customer_id}{note}: tier {v['tier']}, stage {v['lifecycle_stage']}, "
                f"churn {v['churn_score']} ({v['churn_level']}), alert {v['alert_state']}"
            )

    @app.command("merge")
    def merge_command(
        survivor: Survivor, merged: Merged, by: By, reason: Why, as_json: AsJson = False
    ) -> None:
        """Record that MERGED is the same person as SURVIVOR: from now on tier, stage,
        churn and the alert are computed over both histories, under SURVIVOR."""
        run("merged", survivor, merged, by=by, reason=reason, js=as_json)

    @app.command("unmerge")
    def unmerge_command(
        survivor: Survivor, merged: Merged, by: By, reason: Why, as_json: AsJson = False
    ) -> None:
        """Undo a merge: from now on each customer is folded from its own history again."""
        run("unmerged", survivor, merged, by=by, reason=reason, js=as_json)
