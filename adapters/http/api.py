"""The `/v1` endpoints: interactions in, customers and alerts out, ops actions, tokens."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from adapters.handlers import AlertActed, NoOpenAlertError, act_on_alert, record_interactions
from adapters.http.auth import context_of, may, require
from adapters.http.context import ERROR_RESPONSES, ApiContext, ApiError, parse_instant
from adapters.http.metrics import INTERACTIONS
from adapters.store import CustomerNotFoundError, HistoryEntry, Outcome
from adapters.tokens import Principal
from domain.alerts import AlertAction
from domain.customer import InvalidAlertActionError

router = APIRouter(prefix="/v1", responses=dict(ERROR_RESPONSES))

CustomerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the upstream customer id",
    ),
]
AsOf = Annotated[
    str | None,
    Query(description="RFC 3339 instant with offset (default now)", max_length=64),
]

REDACTED: Final = "<redacted>"


# --- interactions ---------------------------------------------------------------------


class ItemOutcome(BaseModel):
    index: int
    outcome: Literal["recorded", "duplicate", "rejected"]
    customer_id: str | None = None
    version: int | None = None
    rejections: list[dict[str, str | None]] = Field(default_factory=list)


class InteractionsAccepted(BaseModel):
    recorded: int
    duplicate: int
    rejected: int
    results: list[ItemOutcome]


async def _read_body(request: Request, context: ApiContext) -> bytes:
    limit = context.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "oversize", f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "oversize", f"the body is over {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout=context.limits.body_timeout_seconds)
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the body did not arrive in time") from None
    return b"".join(chunks)


def _outcome(index: int, outcome: Outcome) -> ItemOutcome:
    return ItemOutcome(
        index=index,
        outcome=outcome.status,
        customer_id=outcome.customer_id,
        version=outcome.version,
        rejections=[r.as_dict() for r in outcome.rejections],
    )


@router.post(
    "/interactions",
    status_code=202,
    response_model=InteractionsAccepted,
    responses={413: {"description": "body over the size limit"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "object", "description": "one interaction"},
                            {"type": "array", "items": {"type": "object"}, "maxItems": 1000},
                        ]
                    }
                }
            },
        }
    },
)
async def post_interactions(
    request: Request,
    principal: Annotated[Principal, Depends(require("write_interactions"))],
) -> InteractionsAccepted:
    """One interaction (a JSON object) or a batch (an array of them), checked against
    the same contract as Kafka and `eventcrm import`, recorded in one transaction,
    idempotent by `(source, event_id)`. Rejected items are dead-lettered with their
    codes, exactly as over Kafka."""
    context = context_of(request)
    body = await _read_body(request, context)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        raise ApiError(400, "empty", "the batch is empty")
    if len(items) > context.limits.max_batch:
        raise ApiError(
            413, "batch_too_large", f"at most {context.limits.max_batch} interactions per request"
        )
    # Each item is checked as the bytes Kafka would carry: the same size and depth rules.
    payloads = [orjson.dumps(item) for item in items]
    outcomes = await run_in_threadpool(
        record_interactions,
        context.store,
        payloads,
        provenance={"channel": "http", "token": principal.name},
    )
    results = [_outcome(n, o) for n, o in enumerate(outcomes)]
    counts = {"recorded": 0, "duplicate": 0, "rejected": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
        INTERACTIONS.labels(outcome=outcome.status).inc()
    return InteractionsAccepted(**counts, results=results)


# --- customers --------------------------------------------------------------------------


def _customer_or_404(customer_id: str) -> ApiError:
    return ApiError(404, "customer_not_found", f"no history for customer {customer_id!r}")


@router.get("/customers/{customer_id}")
def get_customer(
    request: Request,
    customer_id: CustomerId,
    principal: Annotated[Principal, Depends(require("read_customers"))],
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Tier, lifecycle stage, churn score and level, alert, and the reasons, as of
    `as_of` (folded from the stored events)."""
    context = context_of(request)
    instant = parse_instant(as_of, name="as_of", now=context.clock())
    try:
        return context.reader.customer(customer_id, as_of=instant).to_dict()
    except CustomerNotFoundError:
        raise _customer_or_404(customer_id) from None


def history_entry(entry: HistoryEntry, *, personal: bool) -> dict[str, Any]:
    state = dict(entry.state)
    if not personal:
        for key in ("personal", "attributes"):
            if state.get(key) is not None:
                state[key] = REDACTED
    return {
        "version": entry.version,
        "position": entry.position,
        "event": entry.topic.rsplit(".", 1)[-1],
        "chain_hash": entry.chain_hash,
        "previous_hash": entry.previous_hash,
        "chain_ok": entry.chain_ok,
        "state": orjson.loads(orjson.dumps(state, default=str)),
    }


@router.get("/customers/{customer_id}/history")
def get_history(
    request: Request,
    customer_id: CustomerId,
    principal: Annotated[Principal, Depends(require("read_customers"))],
) -> dict[str, Any]:
    """The immutable stored history with its hash chain: personal data decrypted for
    roles allowed to see it (auditor), redacted for the others (ops)."""
    context = context_of(request)
    entries = context.store.history(customer_id)
    if not entries:
        raise _customer_or_404(customer_id)
    personal = may(principal, "read_personal_data")
    return {
        "customer_id": customer_id,
        "personal_data": "decrypted" if personal else "redacted",
        "events": [history_entry(e, personal=personal) for e in entries],
    }


@router.get("/customers/{customer_id}/replay")
def get_replay(
    request: Request,
    customer_id: CustomerId,
    principal: Annotated[Principal, Depends(require("read_customers"))],
    as_of: AsOf = None,
) -> dict[str, Any]:
    """The audited replay: each event (and time-driven change) with the state after it
    and the changes it caused, with their reasons, ending at the state as of `as_of`."""
    context = context_of(request)
    instant = parse_instant(as_of, name="as_of", now=context.clock())
    try:
        steps = context.reader.replay(customer_id, as_of=instant)
    except CustomerNotFoundError:
        raise _customer_or_404(customer_id) from None
    return {
        "customer_id": customer_id,
        "as_of": instant.isoformat(),
        "steps": [step.to_dict() for step in steps],
    }


# --- alerts -------------------------------------------------------------------------------

AlertStateFilter = Literal[
    "open", "raised", "escalated", "acknowledged", "snoozed", "resolved", "auto_resolved", "closed"
]
LevelFilter = Literal["none", "watch", "warning", "critical"]
TierFilter = Literal["platinum", "gold", "silver", "bronze", "none"]


@router.get("/alerts")
def list_alerts(
    request: Request,
    principal: Annotated[Principal, Depends(require("read_alerts"))],
    state: Annotated[
        AlertStateFilter, Query(description="an alert state, or `open` (the default)")
    ] = "open",
    level: Annotated[LevelFilter | None, Query(description="churn level")] = None,
    tier: Annotated[TierFilter | None, Query(description="value tier")] = None,
    since: Annotated[
        str | None, Query(description="read model updated at or after (RFC 3339)", max_length=64)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Alerts from the read models (what the projector has folded), most at risk first,
    with their top reasons; `next_offset` pages on."""
    context = context_of(request)
    after = parse_instant(since, name="since", now=context.clock()) if since else None
    page = context.read_models.alerts(
        state=state, level=level, tier=tier, since=after, limit=limit, offset=offset
    )
    alerts = [alert_view(row.snapshot) for row in page]
    return {
        "alerts": alerts,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(page) == limit else None,
    }


def top_reasons(snapshot: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    raising = [
        r
        for r in snapshot.get("churn_signals", ())
        if r["rule"] != "churn.base" and r.get("points") and float(r["points"]) > 0
    ]
    return sorted(raising, key=lambda r: -float(r["points"]))[:n]


def alert_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "alert_id": snapshot.get("alert_id"),
        "customer_id": snapshot["customer_id"],
        "alert_state": snapshot.get("alert_state"),
        "churn_score": snapshot.get("churn_score"),
        "churn_level": snapshot.get("churn_level"),
        "tier": snapshot.get("tier"),
        "lifecycle_stage": snapshot.get("lifecycle_stage"),
        "evaluated_at": snapshot.get("evaluated_at"),
        "top_reasons": [
            {"rule": r["rule"], "points": r["points"], "message": r["message"]}
            for r in top_reasons(snapshot)
        ],
    }


class AlertActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000)
    until: str | None = Field(
        default=None, max_length=64, description="snooze only: RFC 3339 instant it ends"
    )


def perform(
    context: ApiContext,
    alert_id: str,
    action: AlertAction,
    principal: Principal,
    body: AlertActionBody,
) -> AlertActed:
    """The HTTP side of `adapters.handlers.act_on_alert` (the CLI's own path)."""
    customer_id = context.read_models.customer_of_alert(alert_id)
    if customer_id is None:
        raise ApiError(404, "alert_not_found", f"no alert {alert_id!r}")
    until = None
    if action == "snoozed":
        if not body.until:
            raise ApiError(400, "missing_field", "a snooze needs `until`", field="until")
        until = parse_instant(body.until, name="until", now=context.clock())
    elif body.until is not None:
        raise ApiError(400, "unknown_field", "only a snooze takes `until`", field="until")
    try:
        return act_on_alert(
            context.store,
            context.reader,
            context.clock,
            customer_id,
            action=action,
            by=principal.name,
            reason=body.reason,
            until=until,
            alert_id=alert_id,
        )
    except CustomerNotFoundError:
        raise ApiError(404, "alert_not_found", f"no alert {alert_id!r}") from None
    except NoOpenAlertError as exc:
        raise ApiError(409, exc.code, exc.message) from None
    except InvalidAlertActionError as exc:
        raise ApiError(400, "invalid_alert_action", str(exc)) from None


AlertId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
ActionBody = Annotated[AlertActionBody | None, Body()]


def _act(
    request: Request, alert_id: str, action: AlertAction, principal: Principal, body: Any
) -> dict[str, Any]:
    acted = perform(context_of(request), alert_id, action, principal, body or AlertActionBody())
    return acted.to_dict()


@router.post("/alerts/{alert_id}/acknowledge", responses={409: {"description": "not open"}})
def acknowledge(
    request: Request,
    alert_id: AlertId,
    principal: Annotated[Principal, Depends(require("act_on_alerts"))],
    body: ActionBody = None,
) -> dict[str, Any]:
    """Acknowledge an open alert, recorded as an event carrying the token's name."""
    return _act(request, alert_id, "acknowledged", principal, body)


@router.post("/alerts/{alert_id}/snooze", responses={409: {"description": "not open"}})
def snooze(
    request: Request,
    alert_id: AlertId,
    principal: Annotated[Principal, Depends(require("act_on_alerts"))],
    body: ActionBody = None,
) -> dict[str, Any]:
    """Snooze an open alert until `until`."""
    return _act(request, alert_id, "snoozed", principal, body)


@router.post("/alerts/{alert_id}/resolve", responses={409: {"description": "not open"}})
def resolve(
    request: Request,
    alert_id: AlertId,
    principal: Annotated[Principal, Depends(require("act_on_alerts"))],
    body: ActionBody = None,
) -> dict[str, Any]:
    """Resolve an open alert by hand."""
    return _act(request, alert_id, "resolved", principal, body)


# --- tokens (admin) ---------------------------------------------------------------------


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: Literal["producer", "ops", "auditor", "admin"]


@router.get("/tokens")
def list_tokens(
    request: Request, principal: Annotated[Principal, Depends(require("manage_tokens"))]
) -> list[dict[str, Any]]:
    """Names, roles and last use of every token; never the tokens."""
    return [info.to_dict() for info in context_of(request).tokens.list()]


@router.post("/tokens", status_code=201)
def create_token(
    request: Request,
    body: TokenRequest,
    principal: Annotated[Principal, Depends(require("manage_tokens"))],
) -> dict[str, Any]:
    """A new token, returned once (stored hashed)."""
    token = context_of(request).tokens.create(name=body.name, role=body.role)
    return {"name": body.name, "role": body.role, "token": token}


@router.delete("/tokens/{name}", status_code=204)
def revoke_token(
    request: Request,
    name: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, Depends(require("manage_tokens"))],
) -> Response:
    """Revoke a token: refused from the next request on."""
    context_of(request).tokens.revoke(name)
    return Response(status_code=204)
