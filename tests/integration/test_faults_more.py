"""The faults RELIABILITY's suite did not cover yet (issue 11, item 5): a real
PostgreSQL restart mid-stream, an outage longer than a role's pool rides out, and bad
input of every class mixed into a stream. Each run is judged by the one oracle
(`tests.faultkit.oracle`), and proves its fault landed (docs/faults.md)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from adapters.simulate import simulate
from adapters.topics import TopicNames, ensure_topics
from infra.bootstrap import load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from tests.conftest import StoreFactory, scratch_database, settings_for
from tests.faultkit.badrecords import CLASSES, bad_records, mixed
from tests.faultkit.oracle import DONE, judge, settled
from tests.faultkit.pgserver import OwnedPostgres, owned_postgres
from tests.faultkit.roles import Roles, count, publish_raw, wait_for_progress
from tests.faultkit.switch import Faults

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


@pytest.fixture
def owned() -> Iterator[OwnedPostgres]:
    """A PostgreSQL of the test's own: it is stopped and started under the pipeline."""
    with owned_postgres() as server:
        yield server


def provision(broker: EmbeddedBroker, letter: str) -> TopicNames:
    names = TopicNames(prefix=f"{letter}{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    return names


def watched(roles: Roles, progress: Callable[[], int]) -> Callable[[], int]:
    """``progress``, noticing (and restarting) a role that ended by itself meanwhile:
    `finish` then fails the test with its log."""

    def measure() -> int:
        roles.check_alive()
        return progress()

    return measure


def assert_rode_it_out(project_log: str) -> None:
    """The projector met the outage (a batch or a tick failed) and retried it: its faust
    app never crashed, so its role never had to start it again."""
    assert "projector: a batch or tick failed" in project_log, "the projector met the outage"
    assert "role project failed" not in project_log, project_log[-3000:]


def finish(roles: Roles) -> None:
    """Stop every role: none crashed, each exits 0 on SIGTERM."""
    results = roles.stop()
    assert not roles.crashed, roles.crashed
    for role, (code, log) in results.items():
        assert code == 0, (role, log)


def test_a_postgresql_restart_mid_stream_loses_nothing(
    broker: EmbeddedBroker, owned: OwnedPostgres, make_store: StoreFactory
) -> None:
    """The server itself goes down (a fast shutdown: every session cut) while the three
    roles work through a stream with bad records in it, and comes back a few seconds
    later at the same address: the roles reconnect by themselves."""
    faults = Faults()
    names = provision(broker, "g")
    valid = simulate(customers=200, seed=67, end=END).interactions
    bad = bad_records(2 * len(CLASSES), valid, seed=3)
    stream = mixed(valid, bad, seed=4)
    unique = {(i["source"], i["event_id"]) for i in valid}
    with scratch_database(owned.url()) as url:
        publish_raw(broker.bootstrap, names.interactions, stream)
        roles = Roles(url, broker.bootstrap, names.prefix, batch_size=50)
        try:
            wait_for_progress(
                lambda: count(url, "interaction_keys"),
                lambda n: n >= len(unique) // 4,
                stall=60,
                what="the ingest under way",
                poll=0.01,
            )
            at_stop: list[int] = []

            def restart() -> None:
                at_stop.append(count(url, "interaction_keys"))
                owned.stop()
                assert not owned.running()
                time.sleep(3)  # the outage: the server is down
                owned.start()

            faults.inject("postgres restart", restart)
            progress = settled(
                url=url,
                store=make_store(url),
                bootstrap=broker.bootstrap,
                names=names,
                valid=valid,
                bad_count=len(bad),
            )
            wait_for_progress(progress, lambda p: p == DONE, stall=90, what="the pipeline settled")
            project_log = roles.log("project")
        finally:
            finish(roles)
        faults.assert_landed("postgres restart")
        assert at_stop[0] < len(unique), "the restart landed mid-stream"
        assert_rode_it_out(project_log)
        store = make_store(url)
        verdict = judge(
            url=url,
            store=store,
            policy=load_configured_policy(settings_for(url)),
            bootstrap=broker.bootstrap,
            names=names,
            valid=valid,
            bad=bad,
            published=len(stream),
        )
        verdict.assert_clean()
        assert verdict.alerts_seen > 0, "the stream raised alerts"


def test_an_outage_longer_than_the_pool_rides_out_rewinds_and_pauses_the_ingest(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """The database refuses the application for longer than a role's pool waits for a
    connection (`EVENTCRM_ROLE_POOL_WAIT_SECONDS`, 2 s here): the ingest's batch fails,
    it is rewound (its offsets were not stored) and the role pauses, backing off,
    until the database is back; nothing is lost or doubled."""
    faults = Faults()
    names = provision(broker, "l")
    url = fresh_database_url
    valid = simulate(customers=200, seed=73, end=END).interactions
    bad = bad_records(len(CLASSES), valid, seed=5)
    stream = mixed(valid, bad, seed=6)
    unique = {(i["source"], i["event_id"]) for i in valid}
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    publish_raw(broker.bootstrap, names.interactions, stream)
    roles = Roles(
        url,
        broker.bootstrap,
        names.prefix,
        batch_size=50,
        env={"EVENTCRM_ROLE_POOL_WAIT_SECONDS": "2"},
    )
    try:
        wait_for_progress(
            lambda: count(url, "interaction_keys"),
            lambda n: n >= len(unique) // 4,
            stall=60,
            what="the ingest under way",
            poll=0.01,
        )
        during: list[int] = []

        def outage() -> None:
            # A session opened before the outage (the owner's, not cut) watches it.
            with (
                psycopg.connect(url, autocommit=True) as monitor,
                psycopg.connect(admin, autocommit=True) as conn,
            ):

                def stored() -> int:
                    row = monitor.execute("SELECT count(*) FROM interaction_keys").fetchone()
                    return int(row[0]) if row else -1

                app_sessions = (
                    "FROM pg_stat_activity WHERE datname = %s AND usename = 'eventcrm_app'"
                )

                def sessions() -> int:
                    row = conn.execute(f"SELECT count(*) {app_sessions}", (database,)).fetchone()
                    return int(row[0]) if row else -1

                conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                conn.execute(f"SELECT pg_terminate_backend(pid) {app_sessions}", (database,))
                # A terminated backend ends asynchronously: a commit already under way
                # can still land. Count only once every application session is gone.
                wait_for_progress(
                    sessions,
                    lambda n: n == 0,
                    stall=30,
                    what="the application's sessions to end",
                    poll=0.02,
                )
                during.append(stored())
                # Long past the pool's wait: the role's own recovery has to act. The
                # log shows when it did.
                wait_for_progress(
                    lambda: roles.log("ingest").count("store-unavailable"),
                    lambda n: n >= 1,
                    stall=60,
                    what="the ingest to rewind its batch and pause",
                )
                time.sleep(3)  # and the outage goes on a while after it
                during.append(stored())
                conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

        try:
            faults.inject("long outage", outage)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        progress = settled(
            url=url,
            store=make_store(url),
            bootstrap=broker.bootstrap,
            names=names,
            valid=valid,
            bad_count=len(bad),
        )
        wait_for_progress(
            watched(roles, progress), lambda p: p == DONE, stall=90, what="the pipeline settled"
        )
        ingest_log = roles.log("ingest")
        project_log = roles.log("project")
    finally:
        finish(roles)
    faults.assert_landed("long outage")
    assert during[0] < len(unique), "the outage landed mid-stream"
    assert during[0] == during[1], "nothing was stored during the outage"
    assert "ingest: a batch failed" in ingest_log, "the rewind-and-pause branch ran"
    assert_rode_it_out(project_log)
    verdict = judge(
        url=url,
        store=make_store(url),
        policy=load_configured_policy(settings_for(url)),
        bootstrap=broker.bootstrap,
        names=names,
        valid=valid,
        bad=bad,
        published=len(stream),
    )
    verdict.assert_clean()


def test_bad_records_of_every_class_mixed_into_a_stream_are_each_dead_lettered_with_their_code(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    """`make fault-long` runs 10,000 of them in 100,000 records; here a few of every
    class in a few thousand: no role crashes, no partition wedges, and applied +
    dead-lettered == published, counted on the topics."""
    names = provision(broker, "b")
    url = fresh_database_url
    valid = simulate(customers=200, seed=79, end=END).interactions
    bad = bad_records(5 * len(CLASSES), valid, seed=7)
    assert Counter(b.kind for b in bad) == dict.fromkeys(CLASSES, 5)
    stream = mixed(valid, bad, seed=8)
    roles = Roles(url, broker.bootstrap, names.prefix, batch_size=100)
    try:
        publish_raw(broker.bootstrap, names.interactions, stream)
        progress = settled(
            url=url,
            store=make_store(url),
            bootstrap=broker.bootstrap,
            names=names,
            valid=valid,
            bad_count=len(bad),
        )
        wait_for_progress(progress, lambda p: p == DONE, stall=90, what="the pipeline settled")
    finally:
        finish(roles)
    with psycopg.connect(url) as conn:
        stored = Counter(
            dict(conn.execute("SELECT code, count(*) FROM dead_letters GROUP BY code").fetchall())
        )
    assert stored == Counter(b.code for b in bad)
    verdict = judge(
        url=url,
        store=make_store(url),
        policy=load_configured_policy(settings_for(url)),
        bootstrap=broker.bootstrap,
        names=names,
        valid=valid,
        bad=bad,
        published=len(stream),
    )
    print(verdict.summary())
    verdict.assert_clean()
    assert verdict.dead_letters_on_topic == len(bad)
