"""Settings, read once from the environment (and a `.env` file) by the composition root."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".eventcrm"


class Settings(BaseSettings):
    """Everything configurable; nothing else in the code reads the environment."""

    model_config = SettingsConfigDict(env_prefix="EVENTCRM_", env_file=".env", extra="ignore")

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
    aggregate_cache_size: int = 100_000
