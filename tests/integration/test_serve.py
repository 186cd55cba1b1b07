"""The console script as an operator runs it: `eventcrm serve` (every role, one process
each) against configured PostgreSQL and Kafka, and `eventcrm demo` on the embedded
default. Both must do their work, stop cleanly and leave nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import orjson
import psutil
import psycopg
import pytest

from adapters.readmodels import ReadModelStore
from adapters.simulate import simulate
from adapters.topics import TopicNames, ensure_topics
from infra.broker import EmbeddedBroker
from infra.kafka import producer
from tests.conftest import StoreFactory, settings_for
from tests.integration.test_faults import END, broker  # noqa: F401 - the fixture
from tests.integration.test_pipeline import wait_until

pytestmark = pytest.mark.integration

EVENTCRM = str(Path(sys.executable).parent / "eventcrm")


def test_serve_runs_every_role_in_its_own_process_and_stops_on_sigterm(
    broker: EmbeddedBroker,  # noqa: F811 - the fixture
    fresh_database_url: str,
    make_store: StoreFactory,
) -> None:
    names = TopicNames(prefix=f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(
            fresh_database_url, user="eventcrm_app"
        ),
        "EVENTCRM_MASTER_KEY": settings_for(fresh_database_url).master_key or "",
        "EVENTCRM_KAFKA_BOOTSTRAP": broker.bootstrap,
        "EVENTCRM_TOPIC_PREFIX": names.prefix,
        "EVENTCRM_KAFKA_SESSION_TIMEOUT_SECONDS": "2",
    }
    serving = subprocess.Popen(
        [EVENTCRM, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        interactions = simulate(customers=30, seed=41, end=END).interactions
        client = producer(broker.bootstrap)
        for item in interactions:
            client.send(
                names.interactions, key=item["customer_id"].encode(), value=orjson.dumps(item)
            )
        client.flush()
        client.close()
        unique = {(i["source"], i["event_id"]): i for i in interactions}
        per_customer = Counter(i["customer_id"] for i in unique.values())
        read_models = ReadModelStore(make_store(fresh_database_url))

        def projected() -> bool:
            return all(
                (model := read_models.get(customer)) is not None
                and model.applied_version == expected + 1
                for customer, expected in per_customer.items()
            )

        wait_until(projected, timeout=60, what="every customer projected by `eventcrm serve`")
        roles = psutil.Process(serving.pid).children(recursive=True)
        spawned = [p for p in roles if "spawn_main" in " ".join(p.cmdline())]
        assert len(spawned) == 4, "ingest, relay, project and webhooks, one process each"
    finally:
        serving.send_signal(signal.SIGTERM)
        try:
            _, stderr = serving.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            serving.kill()
            _, stderr = serving.communicate()
    assert serving.returncode == 0, stderr.decode(errors="replace")[-3000:]
    _, alive = psutil.wait_procs(roles, timeout=5)
    assert not alive, f"role processes left running: {alive}"


def test_the_demo_runs_the_pipeline_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EVENTCRM_")  # the embedded default, as a newcomer runs it
    }
    home = str(tmp_path / "home")
    env["EVENTCRM_HOME"] = home
    result = subprocess.run(
        [EVENTCRM, "demo", "--customers", "150"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "projections caught up" in output
    assert "open churn alerts" in output
    assert "audited replay" in output
    left = [p for p in psutil.process_iter() if _environment(p).get("EVENTCRM_HOME") == home]
    assert not left, f"left running: {[p.cmdline() for p in left]}"


def _environment(process: psutil.Process) -> dict[str, str]:
    """A process's environment (every child inherits the demo's EVENTCRM_HOME)."""
    try:
        return process.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return {}
