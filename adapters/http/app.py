"""The HTTP app: the `/v1` API, health, metrics and the console, on FastAPI.

Built by `build_app` from an `ApiContext` that infra's composition root wires; it
constructs no client itself. Every error leaves as JSON ``{"code", "message",
"field"?}`` (the console's pages as HTML); tracebacks only reach the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from adapters.http import api, console, webhooks
from adapters.http.context import ApiContext, ApiError, error_body
from adapters.http.metrics import REQUEST_SECONDS, registry_with
from domain.errors import UnavailableError, UsageError, UserFacingError

log = logging.getLogger(__name__)

_STATUS_OF_CODE = {"token_exists": 409, "unknown_token": 404, "unknown_webhook": 404}


def build_app(context: ApiContext, *, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The app for one API process. ``routers`` are included after the built-in ones."""
    app = FastAPI(
        title="eventcrm",
        version="1",
        description="Event-sourced CRM: interactions in; customers, replays and churn "
        "alerts out. Bearer tokens by role (docs/roles-and-tokens.md).",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    registry = registry_with(context.stats.collect)
    _install_errors(app)
    _install_timing(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        """PostgreSQL reachable, the broker reachable when one is configured, and the
        projector's lag under its bound."""
        checks = readiness(context)
        ok = all(check["ok"] for check in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(webhooks.router)
    for router in routers:
        app.include_router(router)
    console.mount(app)
    return app


def readiness(context: ApiContext) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        context.stats.ping()
        checks["database"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = {"ok": False, "error": " ".join(str(exc).split())[:200]}
    if context.broker_reachable is not None:
        checks["broker"] = {"ok": bool(context.broker_reachable())}
    if checks["database"]["ok"]:
        try:
            lag = context.stats.projector_lag()
            bound = context.limits.ready_max_projector_lag
            checks["projector_lag"] = {"ok": lag <= bound, "events": lag, "bound": bound}
        except Exception as exc:  # noqa: BLE001
            checks["projector_lag"] = {"ok": False, "error": " ".join(str(exc).split())[:200]}
    return checks


def _json_error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if console.wants_html(request):
            return console.error_page(request, exc)
        return _json_error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
        field = ".".join(location[-1:]) or None
        if first.get("type") == "json_invalid":
            return _json_error(400, "malformed_json", "the body is not JSON")
        return _json_error(400, "invalid_parameter", str(first.get("msg", "invalid")), field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _json_error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)

    @app.exception_handler(UserFacingError)
    async def user_facing(request: Request, exc: UserFacingError) -> Response:
        if isinstance(exc, UnavailableError):
            return _json_error(503, exc.code, exc.message)
        status = _STATUS_OF_CODE.get(exc.code, 400 if isinstance(exc, UsageError) else 500)
        return _json_error(status, exc.code, exc.message)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        if isinstance(exc, psycopg.OperationalError | OperationalError | InterfaceError):
            return _json_error(503, "database_unavailable", "the database cannot be reached")
        return _json_error(500, "internal", "an internal error (logged on the server)")


def _install_timing(app: FastAPI) -> None:
    @app.middleware("http")
    async def timing(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(request.method, template, str(status)).observe(
                time.perf_counter() - started
            )
