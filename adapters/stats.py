"""Figures about the whole pipeline, read from PostgreSQL (the truth): what `/metrics`,
`/readyz` and the console's overview show, whichever process did the work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg.sql import SQL, Identifier

from adapters.readmodels import READ_MODELS_TABLE
from adapters.recorder import DEAD_LETTERS_TABLE, EVENTS_TABLE, KEYS_TABLE, TRACKING_TABLE
from adapters.relay import EVENTS_POSITION
from adapters.store import CustomerStore


@dataclass
class Stats:
    interactions: int = 0
    """Interactions stored (idempotency keys: each once, whatever path brought it)."""
    events: int = 0
    """Stored events (interactions, customer creations, ops actions)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    relay_lag: int = 0
    """Stored events the relay has not published to `customer-events` yet."""
    projector_lag: int = 0
    """Stored events no read model includes yet."""
    open_alerts: dict[str, int] = field(default_factory=dict)
    """Open alerts by churn level."""
    alerts_by_state: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    read_models: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "interactions": self.interactions,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "relay_lag": self.relay_lag,
            "projector_lag": self.projector_lag,
            "open_alerts": self.open_alerts,
            "alerts_by_state": self.alerts_by_state,
            "tiers": self.tiers,
            "stages": self.stages,
            "read_models": self.read_models,
        }


class PipelineStats:
    """A handful of aggregate queries on the store's pool (each a scan of its table:
    meant for scrapes every few seconds, not for every request)."""

    def __init__(self, store: CustomerStore) -> None:
        self._datastore = store.datastore
        events = Identifier(self._datastore.schema, EVENTS_TABLE)
        models = Identifier(READ_MODELS_TABLE)
        self._counts = SQL(
            "SELECT (SELECT count(*) FROM {keys}) AS interactions,"
            " (SELECT coalesce(max(notification_id), 0) FROM {events}) AS last,"
            " (SELECT count(*) FROM {events}) AS events,"
            " (SELECT max(notification_id) FROM {tracking}"
            "   WHERE application_name LIKE %s) AS relay,"
            " (SELECT count(*) FROM {models}) AS read_models"
        ).format(
            keys=Identifier(KEYS_TABLE),
            events=events,
            tracking=Identifier(self._datastore.schema, TRACKING_TABLE),
            models=models,
        )
        self._dead = SQL("SELECT code, count(*) AS n FROM {} GROUP BY code").format(
            Identifier(DEAD_LETTERS_TABLE)
        )
        self._lag = SQL(
            "SELECT count(*) AS n FROM {events} e LEFT JOIN {models} rm"
            " ON rm.originator_id = e.originator_id"
            " WHERE e.originator_version > coalesce(rm.applied_version, 0)"
        ).format(events=events, models=models)
        self._groups = SQL(
            "SELECT 'tier' AS k, tier AS v, count(*) AS n FROM {m} GROUP BY tier"
            " UNION ALL SELECT 'stage', lifecycle_stage, count(*) FROM {m} GROUP BY 2"
            " UNION ALL SELECT 'state', alert_state, count(*) FROM {m}"
            "   WHERE alert_state IN ('raised', 'escalated', 'acknowledged', 'snoozed') GROUP BY 2"
            " UNION ALL SELECT 'level', churn_level, count(*) FROM {m}"
            "   WHERE alert_state IN ('raised', 'escalated', 'acknowledged', 'snoozed') GROUP BY 2"
        ).format(m=models)

    def ping(self) -> None:
        with self._datastore.get_connection() as conn:
            conn.execute("SELECT 1")

    def projector_lag(self) -> int:
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._lag)
            row = curs.fetchone()
        return 0 if row is None else int(row["n"])

    def collect(self) -> Stats:
        stats = Stats()
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._counts, (f"{EVENTS_POSITION}%",))
            row = curs.fetchone()
            assert row is not None
            stats.interactions = int(row["interactions"])
            stats.events = int(row["events"])
            stats.read_models = int(row["read_models"])
            stats.relay_lag = max(0, int(row["last"]) - int(row["relay"] or 0))
            curs.execute(self._dead)
            stats.dead_letters = {r["code"]: int(r["n"]) for r in curs.fetchall()}
            curs.execute(self._groups)
            for r in curs.fetchall():
                target = {
                    "tier": stats.tiers,
                    "stage": stats.stages,
                    "state": stats.alerts_by_state,
                    "level": stats.open_alerts,
                }[r["k"]]
                target[str(r["v"])] = int(r["n"])
        stats.projector_lag = self.projector_lag()
        return stats
