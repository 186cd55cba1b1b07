"""Bearer tokens (or the console's cookie holding one) → a `Principal` with a role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.http.context import ACCESS, ApiContext, ApiError
from adapters.tokens import Principal

COOKIE: Final = "eventcrm_token"
"""The console keeps the token it was given here (HttpOnly, SameSite=Strict)."""

bearer = HTTPBearer(auto_error=False, description="an eventcrm API token (`eventcrm token`)")


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


async def authenticate(request: Request, token: str | None) -> Principal:
    if not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer TOKEN")
    principal = await run_in_threadpool(context_of(request).tokens.authenticate, token)
    if principal is None:
        raise ApiError(401, "invalid_token", "the token is unknown or revoked")
    request.state.principal = principal
    return principal


def require(permission: str) -> Callable[..., object]:
    """A dependency: the caller's principal, if its role has ``permission``."""
    allowed = ACCESS[permission]

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        token = credentials.credentials if credentials else request.cookies.get(COOKIE)
        principal = await authenticate(request, token)
        if principal.role not in allowed:
            raise ApiError(
                403,
                "forbidden",
                f"role {principal.role} may not do this (allowed: {', '.join(sorted(allowed))})",
            )
        return principal

    return dependency


def may(principal: Principal, permission: str) -> bool:
    return principal.role in ACCESS[permission]
