"""The web console for ops and auditors: server-rendered pages (Jinja2) over the same
services and role table as the API (docs/console.md).

Signing in takes an API token and keeps it in an HttpOnly, SameSite=Strict cookie, so
every page and button is checked against the token's role on every request, exactly
as the API checks a bearer token, and a revoked token is out at its next click. Buttons
are plain HTML forms; the only script submits the filters when they change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from adapters.http.api import AlertActionBody, alert_view, history_entry, perform, top_reasons
from adapters.http.auth import COOKIE, authenticate, context_of, may
from adapters.http.context import ACCESS, ApiError, parse_instant
from adapters.store import CustomerNotFoundError
from adapters.tokens import Principal
from domain.alerts import AlertAction

HERE: Final = Path(__file__).parent
templates: Final = Jinja2Templates(directory=HERE / "templates")

STAGES: Final = ("prospect", "new", "active", "loyal", "at_risk", "churned", "reactivated")
TIERS: Final = ("platinum", "gold", "silver", "bronze", "none")
LEVELS: Final = ("critical", "warning", "watch", "none")
ACTIONS: Final[dict[str, AlertAction]] = {
    "acknowledge": "acknowledged",
    "snooze": "snoozed",
    "resolve": "resolved",
}

router = APIRouter(include_in_schema=False)


def wants_html(request: Request) -> bool:
    """Console pages answer errors with a page (or the sign-in page), not JSON."""
    path = request.url.path
    return not path.startswith(("/v1/", "/metrics", "/healthz", "/readyz", "/openapi"))


def error_page(request: Request, error: ApiError) -> Response:
    if error.status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"error": error, "principal": getattr(request.state, "principal", None)},
        status_code=error.status,
    )


async def console_user(request: Request) -> Principal:
    principal = await authenticate(request, request.cookies.get(COOKIE))
    if principal.role not in ACCESS["use_console"]:
        raise ApiError(
            403, "forbidden", f"the console is for ops and auditors, not role {principal.role}"
        )
    return principal


User = Annotated[Principal, Depends(console_user)]


@router.get("/login")
def login_page(request: Request, next: str = "/", failed: bool = False) -> Response:
    return templates.TemplateResponse(
        request, "login.html", {"next": _local(next), "failed": failed, "principal": None}
    )


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    token, target = form.get("token", "").strip(), _local(form.get("next", "/"))
    principal = await run_in_threadpool(context_of(request).tokens.authenticate, token)
    if principal is None or principal.role not in ACCESS["use_console"]:
        return RedirectResponse(
            f"/login?{urlencode({'next': target, 'failed': 'true'})}", status_code=303
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def overview(request: Request, principal: User) -> Response:
    context = context_of(request)
    stats = context.stats.collect()
    funnel = [(stage, stats.stages.get(stage, 0)) for stage in STAGES]
    tiers = [(tier, stats.tiers.get(tier, 0)) for tier in TIERS]
    levels = [(level, stats.open_alerts.get(level, 0)) for level in LEVELS]
    return templates.TemplateResponse(
        request,
        "overview.html",
        {
            "principal": principal,
            "stats": stats,
            "funnel": funnel,
            "tiers": tiers,
            "levels": levels,
            "most": max([n for _, n in funnel + tiers] + [1]),
            "now": context.clock(),
        },
    )


@router.get("/alerts")
def alert_queue(
    request: Request,
    principal: User,
    state: str = "open",
    level: str = "",
    tier: str = "",
    done: str = "",
    offset: int = 0,
) -> Response:
    context = context_of(request)
    if state not in {"open", "raised", "escalated", "acknowledged", "snoozed", "resolved"}:
        state = "open"
    page = context.read_models.alerts(
        state=state,
        level=level if level in LEVELS else None,
        tier=tier if tier in TIERS else None,
        limit=50,
        offset=max(0, offset),
    )
    return templates.TemplateResponse(
        request,
        "alerts.html",
        {
            "principal": principal,
            "alerts": [alert_view(row.snapshot) for row in page],
            "filters": {"state": state, "level": level, "tier": tier},
            "levels": LEVELS,
            "tiers": TIERS,
            "done": done,
            "can_act": may(principal, "act_on_alerts"),
            "offset": offset,
            "more": len(page) == 50,
        },
    )


@router.post("/alerts/{alert_id}/{verb}")
async def act(request: Request, alert_id: str, verb: str, principal: User) -> Response:
    action = ACTIONS.get(verb)
    if action is None:
        raise ApiError(404, "not_found", f"no action {verb!r}")
    if not may(principal, "act_on_alerts"):
        raise ApiError(403, "forbidden", f"role {principal.role} may not act on alerts")
    form = await _form(request)
    body = AlertActionBody(reason=form.get("reason", ""), until=form.get("until") or None)
    if action == "snoozed" and body.until and "T" not in body.until:
        body.until = f"{body.until}T00:00:00Z"  # the date input gives a day
    acted = await run_in_threadpool(perform, context_of(request), alert_id, action, principal, body)
    back = _local(form.get("back", "/alerts"))
    note = f"{acted.alert_id} of {acted.customer_id}: {acted.action} by {acted.by}"
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{joiner}{urlencode({'done': note})}", status_code=303)


@router.get("/customers/{customer_id}")
def customer_page(
    request: Request, customer_id: str, principal: User, as_of: str = "", done: str = ""
) -> Response:
    context = context_of(request)
    now = context.clock()
    instant = parse_instant(as_of or None, name="as_of", now=now)
    try:
        view = context.reader.customer(customer_id, as_of=instant).to_dict()
        steps = [s.to_dict() for s in context.reader.replay(customer_id, as_of=instant)]
    except CustomerNotFoundError:
        raise ApiError(404, "customer_not_found", f"no history for {customer_id!r}") from None
    personal = may(principal, "read_personal_data")
    history = [history_entry(e, personal=personal) for e in context.store.history(customer_id)]
    return templates.TemplateResponse(
        request,
        "customer.html",
        {
            "principal": principal,
            "view": view,
            "top": top_reasons(view, 5),
            "steps": steps,
            "history": history,
            "personal": personal,
            "as_of": instant,
            "as_of_text": as_of,
            "chart": churn_chart(steps),
            "can_act": may(principal, "act_on_alerts") and view["alert_open"],
            "done": done,
        },
    )


def churn_chart(
    steps: Sequence[dict[str, Any]], *, width: int = 720, height: int = 180
) -> dict[str, Any]:
    """The churn score over the replay as an SVG polyline (x: time, y: 0–100)."""
    points = [(datetime.fromisoformat(s["at"]), float(s["summary"]["churn_score"])) for s in steps]
    if not points:
        return {"points": "", "width": width, "height": height, "first": "", "last": ""}
    start, end = points[0][0], points[-1][0]
    span = max((end - start).total_seconds(), 1.0)
    pad = 30
    coords = " ".join(
        f"{pad + (at - start).total_seconds() / span * (width - 2 * pad):.1f},"
        f"{height - pad - score / 100 * (height - 2 * pad):.1f}"
        for at, score in points
    )
    return {
        "points": coords,
        "width": width,
        "height": height,
        "pad": pad,
        "first": f"{start:%Y-%m-%d}",
        "last": f"{end:%Y-%m-%d}",
    }


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > 16 * 1024:
        raise ApiError(413, "oversize", "the form is too large")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items() if values}


def _local(target: str) -> str:
    """Only paths of this site are redirect targets (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
