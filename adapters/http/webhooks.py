"""Admin endpoints for signed-webhook subscriptions: the same functions as `eventcrm
webhook add|list|remove` (`adapters.webhooks`), behind the `manage_webhooks` right."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from adapters.http.auth import context_of, require
from adapters.http.context import ERROR_RESPONSES, ApiContext, ApiError
from adapters.tokens import Principal
from adapters.webhooks import (
    add_subscription,
    list_subscriptions,
    new_secret,
    remove_subscription,
)

router = APIRouter(prefix="/v1", responses=dict(ERROR_RESPONSES), tags=["webhooks"])

Admin = Annotated[Principal, Depends(require("manage_webhooks"))]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000)
    levels: list[str] = Field(default=["warning", "critical"], min_length=1, max_length=4)
    secret: str | None = Field(
        default=None, max_length=500, description="signing secret (default: generated)"
    )


def _key(context: ApiContext) -> Any:
    if context.master_key is None:
        raise ApiError(503, "webhooks_unavailable", "this API process has no master key")
    return context.master_key


@router.get("/webhooks")
def list_webhooks(request: Request, principal: Admin) -> list[dict[str, Any]]:
    """Every subscription with its delivery state (never its secret)."""
    return [s.to_dict() for s in list_subscriptions(context_of(request).store.datastore)]


@router.post("/webhooks", status_code=201)
def add_webhook(request: Request, body: WebhookRequest, principal: Admin) -> dict[str, Any]:
    """Subscribe a receiver to churn alerts at `levels`; a generated secret is returned
    once, in `secret`."""
    context = context_of(request)
    secret = body.secret if body.secret is not None else new_secret()
    added = add_subscription(
        context.store.datastore,
        _key(context),
        url=body.url,
        levels=body.levels,
        secret=secret,
        secret_source="api" if body.secret is not None else "generated",
    )
    return {**added.to_dict(), "secret": None if body.secret is not None else secret}


@router.delete("/webhooks/{ref}")
def remove_webhook(
    request: Request,
    ref: Annotated[str, Path(min_length=1, max_length=2000, pattern=r"^[^\x00-\x1f\x7f]+$")],
    principal: Admin,
) -> dict[str, Any]:
    """Remove a subscription (by id or URL) with its undelivered deliveries."""
    return remove_subscription(context_of(request).store.datastore, ref).to_dict()
