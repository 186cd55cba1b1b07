"""`make fault-long`: every fault kind, many times, over a long stream; one summary table.

    python -m tests.faultlong [--interactions 100000] [--bad 10000] [--kills-per-role 20]

A PostgreSQL of the run's own (so it can really be restarted) and an embedded broker;
the three roles as processes (`eventcrm serve --role`). The stream (valid interactions
of a simulation, with ``--bad`` bad records of every class mixed in) is published in
chunks; between chunks a fault is injected, in a shuffled schedule:

- ``kill <role>``: SIGKILL of ingest, relay or project (restarted at once);
- ``zombie``: the projector frozen (SIGSTOP) past its session timeout, then thawed;
- ``postgres restart``: the server stopped (fast shutdown) and started again;
- ``long outage``: the database refuses the application longer than a role's pool
  waits (the ingest's rewind-and-pause);
- ``listen cut``: the relay's LISTEN connection terminated;
- ``broker wipe``: the broker restarted with empty storage (early in the run: upstream
  then publishes everything again, as Kafka is not the source of truth).

After each fault the time to the pipeline's next progress is measured (its recovery).
At the end the one oracle (`tests.faultkit.oracle.judge`) judges the run. Exit status
0 only if nothing was lost, duplicated or mismatched and no role crashed.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from adapters.crypto import MasterKey
from adapters.simulate import simulate
from adapters.topics import TopicNames, ensure_topics
from infra.bootstrap import build_store, load_configured_policy, scratch_database
from infra.broker import embedded_broker
from tests.conftest import settings_for
from tests.faultkit.badrecords import bad_records, mixed
from tests.faultkit.oracle import DONE, count_rows, judge, settled
from tests.faultkit.pgserver import owned_postgres
from tests.faultkit.roles import Roles, publish_raw, wait_for_progress
from tests.faultkit.switch import Faults

END = datetime(2026, 11, 1, tzinfo=UTC)
ROLES = ("ingest", "relay", "project")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--bad", type=int, default=10_000)
    parser.add_argument("--kills-per-role", type=int, default=20)
    parser.add_argument("--zombies", type=int, default=3)
    parser.add_argument("--postgres-restarts", type=int, default=3)
    parser.add_argument("--long-outages", type=int, default=2)
    parser.add_argument("--listen-cuts", type=int, default=3)
    parser.add_argument("--broker-wipes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    faults = Faults()

    say("simulating the stream")
    customers = max(20, args.interactions // 22)
    valid = simulate(customers=customers, seed=args.seed, end=END).interactions
    while len(valid) < args.interactions:
        customers = customers * 11 // 10 + 1
        valid = simulate(customers=customers, seed=args.seed, end=END).interactions
    bad = bad_records(args.bad, valid, seed=args.seed)
    stream = mixed(valid, bad, seed=args.seed)
    say(f"{len(valid)} interactions of {customers} customers, {len(bad)} bad records")

    schedule = (
        [f"kill {role}" for role in ROLES for _ in range(args.kills_per_role)]
        + ["zombie"] * args.zombies
        + ["postgres restart"] * args.postgres_restarts
        + ["long outage"] * args.long_outages
        + ["listen cut"] * args.listen_cuts
    )
    rng.shuffle(schedule)
    wipes_at = sorted(rng.sample(range(1, 4), min(args.broker_wipes, 3)))
    chunks = len(schedule) + len(wipes_at) + 1
    size = -(-len(stream) // chunks)
    parts = [stream[n : n + size] for n in range(0, len(stream), size)]

    with (
        owned_postgres() as server,
        embedded_broker() as broker,
        scratch_database(server.url()) as url,
    ):
        names = TopicNames(prefix=f"long{uuid.uuid4().hex[:6]}.")
        ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
        settings = settings_for(url)
        assert settings.master_key is not None
        store = build_store(settings, url, MasterKey.from_text(settings.master_key))
        database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        roles = Roles(
            url,
            broker.bootstrap,
            names.prefix,
            batch_size=200,
            env={"EVENTCRM_ROLE_POOL_WAIT_SECONDS": "3"},
        )

        def progress() -> int:
            try:
                return count_rows(
                    url,
                    "SELECT (SELECT count(*) FROM interaction_keys)"
                    " + (SELECT count(*) FROM dead_letters)"
                    " + (SELECT coalesce(sum(applied_version), 0) FROM read_models)",
                )
            except psycopg.OperationalError:
                return -2  # the database is down: no progress to see

        def recovered(before: int) -> Callable[[], bool]:
            def check() -> bool:
                crashes = len(roles.crashed)
                roles.check_alive()
                for role, code, log in roles.crashed[crashes:]:
                    say(f"role {role} CRASHED ({code}); restarted. Its log ends:\n{log}")
                return progress() > before

            return check

        def inject(kind: str) -> None:
            before = progress()
            if kind.startswith("kill "):
                faults.inject(kind, lambda: roles.kill(kind.removeprefix("kill ")))
            elif kind == "zombie":
                process = roles.processes["project"]

                def freeze() -> None:
                    process.send_signal(signal.SIGSTOP)
                    time.sleep(5)  # > the 2 s session timeout
                    process.send_signal(signal.SIGCONT)

                faults.inject(kind, freeze)
            elif kind == "postgres restart":

                def restart() -> None:
                    server.stop()
                    time.sleep(2)
                    server.start()

                faults.inject(kind, restart)
            elif kind == "long outage":
                faults.inject(kind, lambda: outage(server.url(), database, roles))
            elif kind == "listen cut":
                faults.inject(kind, lambda: cut_listen(url))
            elif kind == "broker wipe":
                faults.inject(kind, broker.restart)
            before = min(before, progress()) if kind != "broker wipe" else progress()
            took = faults.timed_recovery(recovered(before), timeout=300)
            say(f"{kind}: recovered in {took:.1f} s")
            roles.check_alive()

        published_now = 0
        started = time.monotonic()
        try:
            pending = list(schedule)
            for n, part in enumerate(parts):
                publish_raw(broker.bootstrap, names.interactions, part)
                published_now += len(part)
                time.sleep(rng.uniform(0.2, 1.0))
                roles.check_alive()
                if n in wipes_at:
                    inject("broker wipe")
                    # Upstream publishes again what the broker lost (the store
                    # ignores repeats): the new incarnation holds all of it.
                    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
                    sent = [record for p in parts[: n + 1] for record in p]
                    publish_raw(broker.bootstrap, names.interactions, sent)
                    published_now = len(sent)
                elif pending:
                    inject(pending.pop())
            say("stream published; waiting for the pipeline to settle")
            store.close()  # its sessions may have been cut by the faults
            store = build_store(settings, url, MasterKey.from_text(settings.master_key))
            settle = settled(
                url=url,
                store=store,
                bootstrap=broker.bootstrap,
                names=names,
                valid=valid,
                bad_count=len(bad),
            )
            wait_for_progress(settle, lambda p: p == DONE, stall=180, what="settled")
        finally:
            results = roles.stop()
        elapsed = time.monotonic() - started
        ended = list(roles.crashed) + [
            (role, code, log) for role, (code, log) in results.items() if code != 0
        ]
        # A role (re)started while the database was down reports it and exits
        # (`database_unavailable`, exit 4): by design, for its supervisor to start
        # it again. Counted apart from crashes.
        refused = [e for e in ended if "database_unavailable" in e[2]]
        crashed = [e for e in ended if e not in refused]
        say("judging")
        verdict = judge(
            url=url,
            store=store,
            policy=load_configured_policy(settings),
            bootstrap=broker.bootstrap,
            names=names,
            valid=valid,
            bad=bad,
            published=published_now,
        )
        store.close()
    print_summary(faults, verdict, len(valid), len(bad), crashed, elapsed, len(refused))
    return 0 if verdict.clean and not crashed else 1


def outage(admin_url: str, database: str, roles: Roles) -> None:
    """The application refused for longer than its pool waits (3 s here): the ingest
    rewinds its batch and pauses until the database is back."""
    seen = roles.log("ingest").count("store-unavailable")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = 'eventcrm_app'",
                (database,),
            )
            deadline = time.monotonic() + 60
            while roles.log("ingest").count("store-unavailable") == seen:
                if time.monotonic() > deadline:
                    break  # the ingest had nothing to write: it still saw the outage
                time.sleep(0.2)
            time.sleep(2)
        finally:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def cut_listen(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )


def print_summary(  # noqa: PLR0917 - the run's results, in one table
    faults: Faults,
    verdict: Any,
    interactions: int,
    bad: int,
    crashed: list[Any],
    elapsed: float,
    refused: int,
) -> None:
    rows: list[tuple[str, str]] = [
        ("faults injected", str(sum(faults.landed.values()))),
        *((f"  {kind}", str(n)) for kind, n in sorted(Counter(faults.landed).items())),
        ("interactions (valid, published)", str(interactions)),
        ("bad records (every class)", str(bad)),
        ("dead letters on the DLQ topic", str(verdict.dead_letters_on_topic)),
        ("lost", str(verdict.lost)),
        ("duplicated", str(verdict.duplicated)),
        ("unconsumed (published - consumed)", str(verdict.unconsumed)),
        ("dead-letter mismatches", str(verdict.dead_letter_mismatches)),
        ("read-model mismatches", str(verdict.read_model_mismatches)),
        ("alert mismatches", str(verdict.alert_mismatches)),
        ("alert changes seen (distinct)", str(verdict.alerts_seen)),
        ("alert path differences (reported)", str(verdict.alert_path_differences)),
        ("alerts left open on the stream (reported)", str(verdict.alerts_left_open)),
        ("roles crashed", str(len(crashed))),
        ("role exits, database down (exit 4)", str(refused)),
        ("max recovery time (s)", f"{max(faults.recoveries, default=0.0):.1f}"),
        ("run time (s)", f"{elapsed:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'fault-long summary':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not verdict.clean:
        print(verdict.summary())
    for role, code, log in crashed:
        print(f"role {role} ended with {code}:\n{log}")


if __name__ == "__main__":
    sys.exit(main())
