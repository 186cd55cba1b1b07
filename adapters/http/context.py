"""What the HTTP app is handed by infra's composition root, its errors and its roles."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from adapters.crypto import MasterKey
from adapters.readmodels import ReadModelStore
from adapters.readside import ProjectionReader
from adapters.stats import PipelineStats
from adapters.store import CustomerStore
from adapters.tokens import Role, TokenStore


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits (docs/http-api.md)."""

    max_body_bytes: int = 4 * 1024 * 1024
    """A request body over this is refused with 413 before it is read whole."""
    max_batch: int = 1000
    """Interactions per `POST /v1/interactions`."""
    body_timeout_seconds: float = 10.0
    """A client that has not sent its whole body by then gets 408."""
    ready_max_projector_lag: int = 10_000
    """`/readyz` fails while more stored events than this are not in the read models."""
    page_max: int = 500


@dataclass
class ApiContext:
    """The wired services of one API process (built by `infra.api`)."""

    store: CustomerStore
    reader: ProjectionReader
    read_models: ReadModelStore
    tokens: TokenStore
    stats: PipelineStats
    clock: Callable[[], datetime]
    limits: Limits = field(default_factory=Limits)
    broker_reachable: Callable[[], bool] | None = None
    """None: no broker configured (`/readyz` then does not check one)."""
    master_key: MasterKey | None = None
    """Wraps webhook signing secrets (the admin webhook endpoints need it)."""


class ApiError(Exception):
    """An error answered as ``{"code", "message", "field"?}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return body


ERROR_RESPONSES: Final[Mapping[int | str, dict[str, Any]]] = {
    400: {"description": "bad request: `{code, message, field?}`"},
    401: {"description": "no token, or an unknown or revoked one"},
    403: {"description": "the token's role may not do this"},
}

ACCESS: Final[Mapping[str, frozenset[Role]]] = {
    "write_interactions": frozenset({"producer"}),
    "read_customers": frozenset({"ops", "auditor"}),
    "read_personal_data": frozenset({"auditor"}),
    "read_alerts": frozenset({"ops", "auditor"}),
    "act_on_alerts": frozenset({"ops"}),
    "manage_tokens": frozenset({"admin"}),
    "manage_webhooks": frozenset({"admin"}),
    "use_console": frozenset({"ops", "auditor"}),
}
"""Which roles may do what: the one table every endpoint and the console check
(docs/roles-and-tokens.md shows it)."""


def parse_instant(text: str | None, *, name: str, now: datetime) -> datetime:
    """An RFC 3339 instant with an offset (default ``now``), as a 400 otherwise."""
    if text is None or text == "":
        return now
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, "invalid_timestamp", f"{name} is not an RFC 3339 instant", field=name
        ) from None
    if value.utcoffset() is None:
        raise ApiError(
            400, "missing_offset", f"{name} needs a UTC offset, e.g. Z", field=name
        ) from None
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ApiError(400, "out_of_range", f"{name} is out of range", field=name) from None
    if not 1970 <= value.year <= 9000:
        raise ApiError(400, "out_of_range", f"{name} must be after 1970", field=name)
    return value
