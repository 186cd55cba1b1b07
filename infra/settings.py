"""Settings, read once from the environment (and a `.env` file) by the composition root."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import ConfigurationError

PREFIX = "EVENTCRM_"
DEBUG_VARIABLE = "EVENTCRM_DEBUG"
"""Truthy (1, true, yes, on): errors print their traceback, like `--debug`."""

OTHER_VARIABLES = frozenset({DEBUG_VARIABLE, "EVENTCRM_TEST_DATABASE_URL"})
"""`EVENTCRM_*` names read outside `Settings`: the debug switch and the test suite's server."""


def _default_home() -> Path:
    return Path.home() / ".eventcrm"


class Settings(BaseSettings):
    """Everything configurable; nothing else in the code reads the environment."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    """Where the embedded PostgreSQL data, the generated master key and local state live."""

    database_url: str | None = None
    """The application's connection (its role may not UPDATE/DELETE events). Unset: embedded."""

    admin_database_url: str | None = None
    """The schema owner's connection, used only by `eventcrm migrate`. Unset: `database_url`."""

    app_role: str = "eventcrm_app"
    """The role the application runs as; migration grants it INSERT/SELECT only on events."""

    master_key: str | None = None
    """Base64 of 32 random bytes wrapping every customer's data key. Unset: generated under home."""

    kafka_bootstrap: str | None = None
    topic_prefix: str = "eventcrm."
    kafka_session_timeout_seconds: float = 6.0
    """Consumer-group session timeout of the ingest and projector roles. A group's first
    join takes about half of it on the embedded broker (docs/streams-notes.md); on a
    real cluster 30-45 s rides out pauses better. Heartbeats go at a quarter of it."""
    policy: Path | None = None

    max_future_skew_seconds: float = 300.0
    """How far in the future an `occurred_at` may be before it is rejected (clock skew)."""

    record_batch_size: int = 500
    import_batch_size: int = 5000
    import_workers: int = 2
    """Processes preparing import batches (validation, crypto, encoding); 0 = in-process."""
    lock_timeout_seconds: int = 10
    role_pool_wait_seconds: int = 30
    """How long a pipeline role waits for a database connection before its own recovery
    (the ingest's rewind-and-pause, the projector's batch retry) takes over."""
    aggregate_cache_size: int = 100_000
    checkpoint_interval_seconds: float = 3600.0
    """How often `serve` (its relay role) takes a checkpoint over every chain head and
    publishes it to the `checkpoints` topic (docs/verify.md); 0 turns it off."""
    checkpoint_dir: Path | None = None
    """Where `serve` also writes each checkpoint's file (`checkpoint-ID.json`). Unset: none."""

    http_max_body_bytes: int = 4 * 1024 * 1024
    """The HTTP API refuses a larger request body with 413 (a batch of interactions)."""
    http_max_batch: int = 1000
    """Interactions per `POST /v1/interactions`."""
    http_pool_size: int = 8
    """Database connections of an API process."""
    http_ready_max_projector_lag: int = 10_000
    """`/readyz` answers 503 while more stored events than this are not in the read models."""


def load_settings() -> Settings:
    """`Settings()`, with a value that does not parse reported as a `ConfigurationError`
    naming the variable (every bad one, on one line)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{PREFIX}{'_'.join(str(part) for part in error['loc']).upper()}="
            f"{error['input']!r}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigurationError(
            "; ".join(problems),
            code="invalid_setting",
            hint="fix or unset it (every setting: docs/configuration.md)",
        ) from None


def known_variables() -> frozenset[str]:
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields) | OTHER_VARIABLES


def unknown_variables(names: Iterable[str]) -> list[str]:
    """One warning per `EVENTCRM_*` name no setting reads, with the closest known one: a
    misspelt `EVENTCRM_DATABSE_URL` would otherwise silently start the embedded default."""
    known = known_variables()
    warnings = []
    for name in sorted(set(names)):
        if not name.upper().startswith(PREFIX) or name.upper() in known:
            continue
        # Compared without the prefix every name shares, which would make all look alike.
        suffixes = [k.removeprefix(PREFIX) for k in sorted(known)]
        close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), suffixes, n=1)
        guess = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        warnings.append(f"{name} is not an eventcrm setting and is ignored{guess}")
    return warnings


def dotenv_names(text: str) -> list[str]:
    """The variable names a `.env` file assigns (`NAME=value`, optionally `export NAME=…`)."""
    names = []
    for line in text.splitlines():
        stripped = line.strip().removeprefix("export ").strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            names.append(stripped.split("=", 1)[0].strip())
    return names


def debug_requested(environ: Mapping[str, str]) -> bool:
    return environ.get(DEBUG_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}
