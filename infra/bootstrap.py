"""The composition root: settings in, wired objects out. Tests build through it too.

`Root` builds every service of a process — the CLI's commands, the HTTP API, each
`serve` role — on the one clock it is given (ADR 0028); `configured_root` makes the
root of the configured (or embedded) database.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
from eventsourcing.postgres import PostgresDatastore
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters import checkpoint
from adapters.checker import Broker
from adapters.crypto import MasterKey, encode_key, generate_key
from adapters.importer import BulkImporter, PreparerConfig
from adapters.ingest import Ingest
from adapters.readmodels import ReadModelStore, StoreStateLoader
from adapters.readside import ProjectionReader
from adapters.reannounce import Reannouncer
from adapters.relay import Relay
from adapters.retry import RetryPolicy
from adapters.stats import PipelineStats
from adapters.store import CustomerStore
from adapters.tokens import TokenStore
from adapters.topics import TopicNames
from adapters.webhooks import AlertFeed, Deliverer, WebhookRole
from domain.errors import ConfigurationError, UnavailableError
from infra import kafka
from infra.clock import Clock, system_clock
from infra.embedded import data_directory, embedded_postgres
from infra.kafka import KafkaRecordPublisher
from infra.schema import check_schema, migrate
from infra.settings import Settings
from projections import DEFAULT_POLICY_RESOURCE, Policy, PolicyError, load_policy
from projections.ports import ChangePublisher
from streams.projector import Projector

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS: Final = 3
"""libpq's `connect_timeout` on every connection opened here (unless the URL sets its
own): with the interpreter's start, a database that does not answer is reported within
5 s."""

POOL_WAIT_SECONDS: Final = 5
"""How long a command waits for a connection from its pool (eventsourcing's
`POSTGRES_CONNECT_TIMEOUT`): a database lost mid-command is reported within this."""


def store_env(
    url: str,
    *,
    role: str | None,
    settings: Settings,
    pool_size: int = 2,
    pool_wait: int = POOL_WAIT_SECONDS,
) -> dict[str, str]:
    """eventsourcing's configuration for a connection URL (and optionally a role to use)."""
    parts = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
        "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(parts.get("port", "5432")),
        "POSTGRES_USER": role or str(parts.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(parts.get("password", "")),
        "POSTGRES_LOCK_TIMEOUT": str(settings.lock_timeout_seconds),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": str(pool_wait),
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
        "CREATE_TABLE": "n",
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
        # One writer per customer partition: fast-forwarding would cost a SELECT per
        # get; a stale cache is caught by the version conflict and retried instead.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }


def datastore_kwargs(url: str, settings: Settings, *, role: str | None = None) -> dict[str, Any]:
    env = store_env(url, role=role, settings=settings)
    return {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"],
        "lock_timeout": settings.lock_timeout_seconds,
    }


def datastore_for(url: str, settings: Settings) -> PostgresDatastore:
    datastore = PostgresDatastore(
        **datastore_kwargs(url, settings), connect_timeout=POOL_WAIT_SECONDS
    )
    bound_connect_time(datastore)
    return datastore


def bound_connect_time(datastore: PostgresDatastore) -> None:
    """Give the pool's connections libpq's `connect_timeout` (eventsourcing's own
    "connect timeout" is only the wait for a pooled connection; without this an
    unanswering host holds each attempt for psycopg's default of 130 s)."""
    kwargs = datastore.pool.kwargs
    if isinstance(kwargs, dict):
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)


def check_connection(url: str, *, role: str | None = None, variable: str) -> None:
    """Connect once, directly: a database that is down, a wrong host, database, role or
    password is reported with the server's own words within `CONNECT_TIMEOUT_SECONDS`
    (a pool would only say it got no connection in time)."""
    try:
        params: dict[str, Any] = {"user": role} if role else {}
        if "connect_timeout" not in conninfo_to_dict(url):
            params["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        psycopg.connect(make_conninfo(url, **params)).close()
    except psycopg.ProgrammingError as exc:
        raise _invalid_url(variable, exc) from None
    except psycopg.OperationalError as exc:
        raise database_unavailable(exc, variable=variable) from None


def database_unavailable(
    exc: BaseException, *, variable: str = "EVENTCRM_DATABASE_URL"
) -> UnavailableError:
    """The one message for "cannot talk to the database": libpq's reason, first line."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UnavailableError(
        f"cannot use the database: {reason}",
        code="database_unavailable",
        hint=f"check that PostgreSQL is running and that {variable} names a reachable "
        "host, an existing database and role, and the right password",
    )


def _invalid_url(variable: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"{variable} is not a PostgreSQL connection URL ({str(exc).strip()})",
        code="invalid_database_url",
        hint=f"set {variable}=postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
    )


def parse_url(url: str, variable: str) -> None:
    """Refuse a URL libpq cannot parse, naming the variable it came from."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise _invalid_url(variable, exc) from None


def load_master_key(settings: Settings, *, embedded: bool, say: Callable[[str], None]) -> MasterKey:
    """The configured master key; on the embedded default, one generated under home."""
    if settings.master_key:
        return MasterKey.from_text(settings.master_key)
    if not embedded:
        raise ConfigurationError(
            "EVENTCRM_MASTER_KEY is required with EVENTCRM_DATABASE_URL",
            code="missing_master_key",
            hint="set it to the base64 of 32 random bytes this store was written with "
            "(a new store: generate one and keep it in your secret store)",
        )
    path = settings.home / "master.key"
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(encode_key(generate_key()) + "\n")
        say(f"generated a master key at {path} (set EVENTCRM_MASTER_KEY to use your own)")
    return MasterKey.from_text(path.read_text())


@dataclass
class Services:
    """What the commands use, built once per process."""

    settings: Settings
    store: CustomerStore
    importer: BulkImporter
    reader: ProjectionReader
    read_models: ReadModelStore
    clock: Clock
    embedded: bool
    policy_text: str
    """The configured policy's text (what `calibrate` edits into a new policy)."""
    tokens: TokenStore
    stats: PipelineStats


def default_policy_text() -> str:
    """The packaged default policy (`projections/default_policy.toml`). Read here, in
    infra, because projections do no I/O, not even of their own package data."""
    return resources.files("projections").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")


def configured_policy_text(settings: Settings) -> str:
    """The text of `EVENTCRM_POLICY` if set, else of the packaged default; an unreadable
    or invalid file → a `ConfigurationError` naming the file and the key."""
    if settings.policy is None:
        return default_policy_text()
    try:
        text = settings.policy.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(
            f"cannot read the policy file EVENTCRM_POLICY={settings.policy}: {reason}",
            code="policy_unreadable",
            hint="point EVENTCRM_POLICY at a readable TOML policy, or unset it for the default",
        ) from None
    try:
        load_policy(text)
    except PolicyError as exc:
        raise ConfigurationError(
            f"the policy file EVENTCRM_POLICY={settings.policy} is invalid: {exc}",
            code="invalid_policy",
            hint="fix that key (the packaged projections/default_policy.toml documents each)",
        ) from None
    return text


def load_configured_policy(settings: Settings) -> Policy:
    """`EVENTCRM_POLICY` if set, else the packaged default (see `configured_policy_text`)."""
    return load_policy(configured_policy_text(settings))


@contextlib.contextmanager
def database(
    settings: Settings, *, say: Callable[[str], None] = log.info
) -> Iterator[tuple[str, str, bool]]:
    """(owner URL, application URL, embedded?) — starting the embedded server if needed."""
    if settings.database_url:
        parse_url(settings.database_url, "EVENTCRM_DATABASE_URL")
        if settings.admin_database_url:
            parse_url(settings.admin_database_url, "EVENTCRM_ADMIN_DATABASE_URL")
        yield settings.admin_database_url or settings.database_url, settings.database_url, False
        return
    say(
        f"using the embedded PostgreSQL in {data_directory(settings.home)} "
        "(set EVENTCRM_DATABASE_URL to use your own database)"
    )
    with embedded_postgres(settings.home) as url:
        yield url, url, True


def build_store(
    settings: Settings,
    app_url: str,
    master_key: MasterKey,
    *,
    clock: Clock = system_clock,
    as_role: str | None = None,
    pool_wait: int = POOL_WAIT_SECONDS,
    pool_size: int = 2,
) -> CustomerStore:
    check_connection(app_url, role=as_role, variable="EVENTCRM_DATABASE_URL")
    store = CustomerStore(
        store_env(
            app_url, role=as_role, settings=settings, pool_size=pool_size, pool_wait=pool_wait
        ),
        master_key=master_key,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
        clock=clock,
        cache_size=settings.aggregate_cache_size,
    )
    bound_connect_time(store.datastore)
    try:
        check_schema(store.datastore)
    except BaseException:
        store.close()
        raise
    return store


@contextlib.contextmanager
def configured_root(
    settings: Settings,
    *,
    say: Callable[[str], None] = log.info,
    clock: Clock = system_clock,
) -> Iterator[Root]:
    """The root of one process on the configured database; the embedded default is
    started, and migrates itself."""
    with database(settings, say=say) as (admin_url, app_url, embedded):
        master_key = load_master_key(settings, embedded=embedded, say=say)
        if embedded:
            run_migrations(settings, admin_url)
        # On the embedded default the owner connects, then acts as the application role,
        # so even local runs cannot UPDATE or DELETE events.
        yield Root(
            settings,
            app_url,
            master_key,
            as_role=settings.app_role if embedded else None,
            clock=clock,
            embedded=embedded,
        )


@contextlib.contextmanager
def services(
    settings: Settings,
    *,
    say: Callable[[str], None] = log.info,
    clock: Clock = system_clock,
) -> Iterator[Services]:
    """Wire everything for one CLI process (see `configured_root`)."""
    with configured_root(settings, say=say, clock=clock) as root, root.services() as built:
        yield built


def wired(
    settings: Settings,
    app_url: str,
    master_key: MasterKey,
    *,
    as_role: str | None,
    clock: Clock = system_clock,
    embedded: bool = False,
    pool_size: int = 2,
) -> contextlib.AbstractContextManager[Services]:
    """`Root.services` on a running database (tests and benchmarks build through it)."""
    root = Root(settings, app_url, master_key, as_role=as_role, clock=clock, embedded=embedded)
    return root.services(pool_size=pool_size)


@dataclass(frozen=True)
class RelayRole:
    """What one life of the `relay` role runs (infra/serve.py)."""

    relay: Relay
    checkpoints: Callable[[threading.Event], None] | None
    """The periodic checkpoint step beside the relay (docs/verify.md), if configured."""


@dataclass(frozen=True)
class ProjectorParts:
    """What the `project` role's faust app is built around (`streams.app.build_app`)."""

    projector: Callable[[ChangePublisher], Projector]
    publish_changes: KafkaRecordPublisher
    due: Callable[[datetime], list[tuple[str, int, int]]]
    clock: Clock


@dataclass(frozen=True)
class Root:
    """The composition root of one process: which database it uses, as which role, and
    the one clock it runs on. Every service of a CLI command, of the HTTP API and of each
    `serve` role is built by these methods, so all of them share that clock (ADR 0028).
    Picklable with the system clock: a spawned role process is handed its root."""

    settings: Settings
    app_url: str
    master_key: MasterKey
    as_role: str | None = None
    clock: Clock = system_clock
    embedded: bool = False

    def store(self, *, pool_size: int = 2, pool_wait: int = POOL_WAIT_SECONDS) -> CustomerStore:
        return build_store(
            self.settings,
            self.app_url,
            self.master_key,
            clock=self.clock,
            as_role=self.as_role,
            pool_wait=pool_wait,
            pool_size=pool_size,
        )

    def policy(self) -> Policy:
        return load_configured_policy(self.settings)

    def topics(self) -> TopicNames:
        return TopicNames(prefix=self.settings.topic_prefix)

    def check(self) -> None:
        """Open and close a store, load the policy: what every role would find wrong at
        its start (the database, its schema, the policy) is reported once, here."""
        self.store().close()
        self.policy()

    @contextlib.contextmanager
    def services(self, *, pool_size: int = 2) -> Iterator[Services]:
        """The services of a CLI command or of the HTTP API, closed on exit."""
        settings = self.settings
        store = self.store(pool_size=pool_size)
        try:
            importer = BulkImporter(
                store,
                batch_size=settings.import_batch_size,
                clock=self.clock,
                workers=settings.import_workers,
                worker_config=PreparerConfig(
                    datastore=datastore_kwargs(self.app_url, settings, role=self.as_role),
                    master_key=encode_key(self.master_key.raw),
                    max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
                    cache_size=settings.aggregate_cache_size,
                ),
            )
            policy_text = configured_policy_text(settings)
            reader = ProjectionReader(store, load_policy(policy_text))
            # A wrong EVENTCRM_MASTER_KEY is refused before any command reads or writes
            # anything (docs/privacy.md), not when the first key is unwrapped.
            store.keyring.check_master()
            yield Services(
                settings=settings,
                store=store,
                importer=importer,
                reader=reader,
                read_models=ReadModelStore(store),
                clock=self.clock,
                embedded=self.embedded,
                policy_text=policy_text,
                tokens=TokenStore(store.datastore, clock=self.clock),
                stats=PipelineStats(store),
            )
        finally:
            store.close()

    # --- the `serve` roles: each life of a role builds its clients here and closes them
    # when it ends, so a restarted role never reuses a failed one (infra/serve.py).

    def role_store(self) -> CustomerStore:
        return self.store(pool_wait=self.settings.role_pool_wait_seconds)

    @contextlib.contextmanager
    def ingest(
        self,
        bootstrap: str,
        *,
        group: str,
        incarnation: str,
        session_timeout: float,
        retry: RetryPolicy,
    ) -> Iterator[Ingest]:
        """Kafka `interactions` → the store."""
        with (
            contextlib.closing(self.role_store()) as store,
            contextlib.closing(
                kafka.consumer(
                    bootstrap, group_id=group, session_timeout_ms=int(session_timeout * 1000)
                )
            ) as client,
        ):
            yield Ingest(
                store,
                client,
                topic=self.topics().interactions,
                batch_size=self.settings.record_batch_size,
                retry=retry,
                incarnation=incarnation,
            )

    @contextlib.contextmanager
    def relay(self, bootstrap: str, *, incarnation: Callable[[str], str]) -> Iterator[RelayRole]:
        """The store's outbox → `customer-events` and the DLQ topic, re-announcing after
        a broker wipe; ``incarnation`` names a topic's current incarnation."""
        topics = self.topics()
        with contextlib.closing(self.role_store()) as store, contextlib.ExitStack() as stack:
            client = kafka.producer(bootstrap)
            # Bounded: after a broker wipe a plain close() waited forever on sends that
            # could never complete, and the relay never restarted (docs/faults.md).
            stack.callback(kafka.close_producer, client)
            relay = Relay(
                store,
                client,
                events_topic=topics.customer_events,
                dlq_topic=topics.interactions_dlq,
                conninfo=self.app_url,
                events_incarnation=incarnation(topics.customer_events),
                dlq_incarnation=incarnation(topics.interactions_dlq),
                needed_from=ReadModelStore(store).first_unapplied,
                reannounce=Reannouncer(
                    store,
                    self.policy(),
                    topics=topics,
                    incarnations={t: incarnation(t) for t in topics.changes()},
                ).run,
            )
            interval = self.settings.checkpoint_interval_seconds
            checkpoints = (
                functools.partial(
                    checkpoint.run_periodically,
                    store,
                    client,
                    topics.checkpoints,
                    interval=interval,
                    clock=self.clock,
                    directory=self.settings.checkpoint_dir,
                )
                if interval > 0
                else None
            )
            yield RelayRole(relay, checkpoints)

    @contextlib.contextmanager
    def webhooks(
        self, bootstrap: str, *, incarnation: str, retry: RetryPolicy, timeout: float
    ) -> Iterator[WebhookRole]:
        """`churn-alerts` → the webhook outbox → signed POSTs (ADR 0023)."""
        with (
            contextlib.closing(self.role_store()) as store,
            contextlib.closing(
                KafkaConsumer(
                    bootstrap_servers=bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    fetch_max_wait_ms=100,
                )
            ) as client,
            httpx.Client(timeout=timeout, follow_redirects=False) as http,
        ):
            feed = AlertFeed(
                store.datastore,
                client,
                topic=self.topics().churn_alerts,
                incarnation=incarnation,
            )
            deliverer = Deliverer(
                store.datastore, self.master_key, http, policy=retry, clock=self.clock
            )
            yield WebhookRole(store.datastore, self.app_url, feed, deliverer)

    @contextlib.contextmanager
    def projector(self, bootstrap: str) -> Iterator[ProjectorParts]:
        """The projector's loader, sink and publisher, on one store."""
        with (
            contextlib.closing(self.role_store()) as store,
            contextlib.closing(KafkaRecordPublisher(bootstrap)) as publisher,
        ):
            policy = self.policy()
            read_models = ReadModelStore(store)
            loader = StoreStateLoader(store, policy)

            def projector(changes: ChangePublisher) -> Projector:
                return Projector(
                    policy=policy,
                    loader=loader,
                    sink=read_models,
                    publisher=changes,
                    groups=loader,
                )

            yield ProjectorParts(projector, publisher, read_models.due, self.clock)


def run_migrations(settings: Settings, admin_url: str) -> int:
    check_connection(admin_url, variable="EVENTCRM_ADMIN_DATABASE_URL")
    datastore = datastore_for(admin_url, settings)
    try:
        return migrate(datastore, app_role=settings.app_role)
    finally:
        datastore.close()


def default_sample() -> Path:
    return Path(__file__).parent / "samples" / "interactions.jsonl"


@dataclass
class KafkaClients:
    """Kafka access for the CLI tools, on the configured cluster."""

    bootstrap: str
    topics: TopicNames

    def producer(self) -> KafkaProducer:
        return kafka.producer(self.bootstrap)

    def reader(self, topic: str, *, from_beginning: bool) -> KafkaConsumer:
        """Every partition of `topic`, assigned by hand (no group join to wait for)."""
        client = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        partitions = client.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        client.assign(assigned)
        if from_beginning:
            client.seek_to_beginning(*assigned)
        else:
            client.seek_to_end(*assigned)
        return client


@contextlib.contextmanager
def kafka_access(settings: Settings) -> Iterator[KafkaClients]:
    if not settings.kafka_bootstrap:
        raise ConfigurationError(
            "no Kafka cluster is configured",
            code="kafka_not_configured",
            hint="set EVENTCRM_KAFKA_BOOTSTRAP=host:port[,host:port] to publish or tail "
            "(`eventcrm serve` and `eventcrm demo` start an embedded broker themselves)",
        )
    yield KafkaClients(settings.kafka_bootstrap, TopicNames(prefix=settings.topic_prefix))


def broker_of(settings: Settings) -> Broker | None:
    """The configured broker and topic names, for `verify` (None: no broker configured)."""
    if not settings.kafka_bootstrap:
        return None
    return Broker(settings.kafka_bootstrap, TopicNames(prefix=settings.topic_prefix))


def with_database(url: str, name: str) -> str:
    """The same server connection, to another database."""
    return make_conninfo(url, dbname=name)


def recreate_database(owner_url: str, name: str) -> str:
    """Drop (forcing out sessions) and create `name`; returns its owner URL."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(owner_url, name)


@contextlib.contextmanager
def scratch_database(admin_url: str, *, prefix: str = "eventcrm_scratch") -> Iterator[str]:
    """A new, migrated database for a test or a benchmark, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = recreate_database(admin_url, name)
    try:
        run_migrations(Settings(_env_file=None, database_url=url), url)  # type: ignore[call-arg]
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def configure_logging() -> None:
    """Warnings and errors to stderr, for the CLI and every role process it starts."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python warns about its own selector loop and mode about a slow tick under
    # load: both are about throughput, not correctness, and drown the operator's view.
    for name in ("kafka", "mode.timers"):
        logging.getLogger(name).setLevel(logging.ERROR)
