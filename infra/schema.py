"""The explicit migration step: tables, immutability triggers, the application role.

Workers never create tables: they check the schema version at start and refuse to run
on an unmigrated database, so a typo'd URL cannot silently create a second store.
"""

from __future__ import annotations

from collections.abc import Callable

from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from adapters.recorder import (
    DATA_KEYS_TABLE,
    DEAD_LETTERS_TABLE,
    EVENTS_TABLE,
    KEYS_TABLE,
    TRACKING_TABLE,
    CustomerRecorder,
)
from domain.errors import ConfigurationError

SCHEMA_VERSION = 6
MIGRATIONS_TABLE = "eventcrm_migrations"


class SchemaNotMigratedError(ConfigurationError):
    """The database has no (or an older) eventcrm schema: run `eventcrm migrate`."""

    code = "schema_not_migrated"

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            hint="run `eventcrm migrate` as the schema owner (EVENTCRM_ADMIN_DATABASE_URL)",
        )


def _v1(role: str) -> list[sql.Composed | sql.SQL]:
    r = sql.Identifier(role)
    events = sql.Identifier(EVENTS_TABLE)
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS chain_hash bytea NOT NULL").format(events),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " source text NOT NULL, event_id text NOT NULL, customer_id uuid NOT NULL,"
            " originator_version bigint NOT NULL, digest text NOT NULL,"
            " PRIMARY KEY (source, event_id))"
        ).format(sql.Identifier(KEYS_TABLE)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " customer_id uuid PRIMARY KEY, wrapped bytea, master_key_id text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(), forgotten_at timestamptz)"
        ).format(sql.Identifier(DATA_KEYS_TABLE)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now(),"
            " code text NOT NULL, field text, message text NOT NULL, rejections jsonb NOT NULL,"
            " payload bytea NOT NULL, source text, event_id text, customer_id text,"
            " provenance jsonb)"
        ).format(sql.Identifier(DEAD_LETTERS_TABLE)),
        sql.SQL("CREATE INDEX IF NOT EXISTS dead_letters_customer_idx ON {} (customer_id)").format(
            sql.Identifier(DEAD_LETTERS_TABLE)
        ),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION eventcrm_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'stored events are immutable (% refused on %)', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        ),
        sql.SQL("DROP TRIGGER IF EXISTS customer_events_immutable ON {}").format(events),
        sql.SQL(
            "CREATE TRIGGER customer_events_immutable BEFORE UPDATE OR DELETE ON {} "
            "FOR EACH ROW EXECUTE FUNCTION eventcrm_refuse_change()"
        ).format(events),
        sql.SQL("DROP TRIGGER IF EXISTS customer_events_no_truncate ON {}").format(events),
        sql.SQL(
            "CREATE TRIGGER customer_events_no_truncate BEFORE TRUNCATE ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION eventcrm_refuse_change()"
        ).format(events),
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) "
            "THEN CREATE ROLE {} LOGIN; END IF; END $$"
        ).format(sql.Literal(role), r),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(r),
        # UPDATE is granted only because LOCK ... IN EXCLUSIVE MODE requires it; the
        # trigger refuses every actual UPDATE. No DELETE, no TRUNCATE.
        sql.SQL("REVOKE ALL ON {} FROM {}").format(events, r),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(events, r),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(KEYS_TABLE), r),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(DEAD_LETTERS_TABLE), r),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
            sql.Identifier(DATA_KEYS_TABLE), r
        ),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
            sql.Identifier(TRACKING_TABLE), r
        ),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(r),
        sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(MIGRATIONS_TABLE), r),
    ]


def _v2(role: str) -> list[sql.Composed | sql.SQL]:
    """Read models: disposable projections of the store (`eventcrm rebuild` recomputes
    them), so unlike events the application role may update and delete them."""
    r = sql.Identifier(role)
    table = sql.Identifier("read_models")  # adapters.readmodels.READ_MODELS_TABLE
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " customer_id text PRIMARY KEY, applied_version bigint NOT NULL,"
            " applied_position bigint NOT NULL, next_deadline timestamptz,"
            " evaluated_at timestamptz, tier text, lifecycle_stage text, churn_score int,"
            " churn_level text, alert_state text, alert_id text, snapshot jsonb NOT NULL,"
            " updated_at timestamptz DEFAULT now())"
        ).format(table),
        # Ops: open alerts, worst first. Names are spelled out, not imported, so this
        # migration stays what it was when it ran.
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS read_models_open_alerts_idx ON {} (churn_score DESC)"
            " WHERE alert_state IN ('raised', 'escalated', 'acknowledged', 'snoozed')"
        ).format(table),
        # The durable timer list: customers due for a time-driven change after a restart.
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS read_models_next_deadline_idx ON {} (next_deadline)"
            " WHERE next_deadline IS NOT NULL"
        ).format(table),
        # min(applied_position): where the relay re-publishes from after a broker wipe.
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS read_models_applied_position_idx ON {} (applied_position)"
        ).format(table),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(table, r),
    ]


def _v3(role: str) -> list[sql.Composed | sql.SQL]:
    """Read models name their aggregate too, so "which stored events has no read model
    applied yet" is one join with the events table: where the relay re-publishes from
    after the broker lost its data. Rows written before stay NULL, which counts as
    "nothing applied" (safe: more is re-published, duplicates are ignored)."""
    del role
    table = sql.Identifier("read_models")
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS originator_id uuid").format(table),
        sql.SQL("DROP INDEX IF EXISTS read_models_applied_position_idx"),
    ]


def _v4(role: str) -> list[sql.Composed | sql.SQL]:
    """Topic incarnations (ADR 11) as they are first seen, and whether the change
    messages a lost predecessor may have carried were re-announced on them (ADR 15)."""
    table = sql.Identifier("topic_incarnations")  # adapters.reannounce.INCARNATIONS_TABLE
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " topic text NOT NULL, incarnation text NOT NULL,"
            " adopted_at timestamptz NOT NULL DEFAULT now(), announced_at timestamptz,"
            " PRIMARY KEY (topic, incarnation))"
        ).format(table),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(table, sql.Identifier(role)),
    ]


def _v5(role: str) -> list[sql.Composed | sql.SQL]:
    """The churn score is a percentage with one decimal (a probability of churn within
    the policy's horizon, fine enough to set alert levels for a budget)."""
    del role
    return [
        sql.SQL("ALTER TABLE {} ALTER COLUMN churn_score TYPE numeric(4, 1)").format(
            sql.Identifier("read_models")
        )
    ]


def _v6(role: str) -> list[sql.Composed | sql.SQL]:
    """Signed-webhook subscriptions to churn alerts, their delivery outbox, and the
    deliverer's positions on `churn-alerts` (ADR 0023; adapters.webhooks names them)."""
    r = sql.Identifier(role)
    subscriptions = sql.Identifier("webhook_subscriptions")
    deliveries = sql.Identifier("webhook_deliveries")
    positions = sql.Identifier("webhook_positions")
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY, url text NOT NULL, levels text[] NOT NULL,"
            " secret_ref uuid NOT NULL, secret bytea NOT NULL, secret_source text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'dead')),"
            " consecutive_failures int NOT NULL DEFAULT 0, dead_since timestamptz,"
            " last_error text, last_attempt_at timestamptz, last_success_at timestamptz)"
        ).format(subscriptions),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY,"
            " subscription_id bigint NOT NULL REFERENCES {} (id) ON DELETE CASCADE,"
            " idempotency_key text NOT NULL, alert_id text NOT NULL, customer_id text NOT NULL,"
            " transition text NOT NULL, level text NOT NULL, body bytea NOT NULL,"
            " state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered')),"
            " attempts int NOT NULL DEFAULT 0,"
            " next_attempt_at timestamptz NOT NULL DEFAULT now(), last_status int,"
            " last_error text, created_at timestamptz NOT NULL DEFAULT now(),"
            " delivered_at timestamptz, UNIQUE (subscription_id, idempotency_key))"
        ).format(deliveries, subscriptions),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON {} (next_attempt_at, id)"
            " WHERE state = 'pending'"
        ).format(deliveries),
        sql.SQL("CREATE INDEX IF NOT EXISTS webhook_deliveries_alert_idx ON {} (alert_id)").format(
            deliveries
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, next_offset bigint NOT NULL)"
        ).format(positions),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}, {}, {} TO {}").format(
            subscriptions, deliveries, positions, r
        ),
        sql.SQL(
            "GRANT USAGE ON SEQUENCE webhook_subscriptions_id_seq, webhook_deliveries_id_seq TO {}"
        ).format(r),
    ]


MIGRATIONS: dict[int, Callable[[str], list[sql.Composed | sql.SQL]]] = {
    1: _v1,
    2: _v2,
    3: _v3,
    4: _v4,
    5: _v5,
    6: _v6,
}


def migrate(datastore: PostgresDatastore, *, app_role: str) -> int:
    """Bring the schema to SCHEMA_VERSION as the owner; idempotent. Returns the version."""
    # eventsourcing's own DDL for its tables, so they are exactly what its recorder expects.
    CustomerRecorder(datastore).create_table()
    with datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(hashtext('eventcrm-migrate'))")
        curs.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version int PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(MIGRATIONS_TABLE))
        )
        curs.execute(
            sql.SQL("SELECT coalesce(max(version), 0) AS v FROM {}").format(
                sql.Identifier(MIGRATIONS_TABLE)
            )
        )
        row = curs.fetchone()
        current = 0 if row is None else int(row["v"])
        for version in sorted(MIGRATIONS):
            if version <= current:
                continue
            for statement in MIGRATIONS[version](app_role):
                curs.execute(statement)
            curs.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                    sql.Identifier(MIGRATIONS_TABLE)
                ),
                (version,),
            )
    return SCHEMA_VERSION


def check_schema(datastore: PostgresDatastore) -> None:
    """Refuse to run on a database `eventcrm migrate` has not brought up to date.

    The migrations table is looked up in the catalog, so only its absence reads as "not
    migrated"; any other failure (a missing role or database, a lost connection, a
    denied privilege) goes up with its own message."""
    with datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (MIGRATIONS_TABLE,))
        found = curs.fetchone()
        if found is None or not found["present"]:
            raise SchemaNotMigratedError("this database has no eventcrm schema")
        curs.execute(
            sql.SQL("SELECT coalesce(max(version), 0) AS v FROM {}").format(
                sql.Identifier(MIGRATIONS_TABLE)
            )
        )
        row = curs.fetchone()
    version = 0 if row is None else int(row["v"])
    if version < SCHEMA_VERSION:
        raise SchemaNotMigratedError(
            f"this database's eventcrm schema is at version {version}, "
            f"this eventcrm needs {SCHEMA_VERSION}"
        )
