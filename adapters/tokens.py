"""API tokens: who may call the HTTP API, in which role (docs/roles-and-tokens.md).

A token is 32 random bytes (URL-safe text with an ``ecrm_`` prefix), shown once when
it is created. The database keeps only its SHA-256 digest: a token has full entropy,
so a slow password hash would add nothing but latency to every request
(docs/adr/0020). Every request looks the digest up again, so a revoked token is
refused at once, by every API process.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, get_args

from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore
from psycopg import errors as pg_errors
from psycopg.sql import SQL, Identifier

from domain.errors import UsageError

Role = Literal["producer", "ops", "auditor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

TOKENS_TABLE: Final = "api_tokens"
TOKEN_PREFIX: Final = "ecrm_"  # noqa: S105 - a prefix, not a secret
NAME_MAX: Final = 64

LAST_USE_RESOLUTION: Final = timedelta(seconds=60)
"""``last_used_at`` is written at most once a minute per token: a write on every
request would double the cost of a read."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the token's name (recorded on what it does) and role."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What `token list` shows: never the token, nor its digest."""

    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "last_used_at": None if self.last_used_at is None else self.last_used_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise UsageError(
        f"unknown role {role!r}",
        code="unknown_role",
        hint=f"choose one of {', '.join(ROLES)}",
    )


def check_name(name: str) -> str:
    if not name or len(name) > NAME_MAX or not name.isprintable() or name != name.strip():
        raise UsageError(
            f"invalid token name {name!r}",
            code="invalid_token_name",
            hint=f"use 1-{NAME_MAX} printable characters, no surrounding spaces",
        )
    return name


class TokenStore:
    """The `api_tokens` table (migration v7), on the store's connection pool."""

    def __init__(self, datastore: PostgresDatastore, *, clock: Callable[[], datetime]) -> None:
        self._datastore = datastore
        self._clock = clock
        table = Identifier(TOKENS_TABLE)
        self._insert = SQL(
            "INSERT INTO {} (name, role, digest, created_at) VALUES (%s, %s, %s, %s)"
        ).format(table)
        self._list = SQL(
            "SELECT name, role, created_at, last_used_at, revoked_at FROM {} ORDER BY name"
        ).format(table)
        self._revoke = SQL(
            "UPDATE {} SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL"
        ).format(table)
        self._exists = SQL("SELECT revoked_at FROM {} WHERE name = %s").format(table)
        self._find = SQL(
            "SELECT name, role, last_used_at FROM {} WHERE digest = %s AND revoked_at IS NULL"
        ).format(table)
        self._touch = SQL("UPDATE {} SET last_used_at = %s WHERE name = %s").format(table)

    def create(self, *, name: str, role: str) -> str:
        """A new token for ``role`` under ``name``; returns the token (never stored)."""
        checked_role, checked_name = check_role(role), check_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._datastore.transaction(commit=True) as curs:
                curs.execute(
                    self._insert, (checked_name, checked_role, digest(token), self._clock())
                )
        except (pg_errors.UniqueViolation, IntegrityError):  # the datastore wraps it
            raise UsageError(
                f"a token named {name!r} exists (or existed: names of revoked tokens stay "
                "taken, since the actions they signed name them)",
                code="token_exists",
                hint="choose another name",
            ) from None
        return token

    def list(self) -> list[TokenInfo]:
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._list)
            rows = curs.fetchall()
        return [
            TokenInfo(
                name=r["name"],
                role=check_role(r["role"]),
                created_at=r["created_at"],
                last_used_at=r["last_used_at"],
                revoked_at=r["revoked_at"],
            )
            for r in rows
        ]

    def revoke(self, name: str) -> None:
        """Revoke the token named ``name``; an unknown name is a `UsageError`."""
        with self._datastore.transaction(commit=True) as curs:
            curs.execute(self._revoke, (self._clock(), name))
            if curs.rowcount:
                return
            curs.execute(self._exists, (name,))
            row = curs.fetchone()
        if row is None:
            raise UsageError(
                f"no token named {name!r}", code="unknown_token", hint="see `eventcrm token list`"
            )

    def authenticate(self, token: str) -> Principal | None:
        """The principal a presented token stands for; None if unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._find, (digest(token),))
            row = curs.fetchone()
            if row is None:
                return None
            now = self._clock()
            last = row["last_used_at"]
            if last is None or now - last >= LAST_USE_RESOLUTION:
                curs.execute(self._touch, (now, row["name"]))  # autocommit
        return Principal(name=row["name"], role=check_role(row["role"]))
