"""A pipeline run that raises churn alerts, shared by the webhook and outbound-contract
tests: simulated customers published with the publisher SDK (plus bad input for the
DLQ), every role of `infra.serve` until the read models caught up, on the alerting test
policy (tests/conftest.py), with the wall clock past the simulation's end."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from adapters.publisher import Publisher
from adapters.readmodels import ReadModelStore
from adapters.simulate import simulate
from adapters.topics import TopicNames, ensure_topics
from infra.kafka import producer
from infra.serve import Tuning, run_roles
from infra.settings import Settings
from tests.conftest import StoreFactory, app_root, settings_for
from tests.integration.test_pipeline import END, read_topic, wait_until

BAD: Sequence[tuple[bytes, bytes]] = ((b"bad-1", b"{broken"), (b"bad-2", b'{"kind": "purchase"}'))


@dataclass(frozen=True)
class AlertingRun:
    bootstrap: str
    names: TopicNames
    database_url: str
    settings: Settings
    published: int
    stored: int

    def messages(self, topic: str) -> list[Any]:
        """Every record of one of the run's topics (by consuming: Tansu's end offsets)."""
        return read_topic(self.bootstrap, topic, self.names.partitions()[topic])

    def alerts(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.messages(self.names.churn_alerts)]


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def run_alerting_pipeline(
    bootstrap: str, database_url: str, make_store: StoreFactory, *, customers: int, seed: int
) -> AlertingRun:
    names = TopicNames(prefix=f"w{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, names.all(), partitions=names.partitions())
    settings = settings_for(database_url, topic_prefix=names.prefix)
    assert settings.master_key is not None
    interactions = simulate(customers=customers, seed=seed, end=END).interactions
    unique = {(i["source"], i["event_id"]): i for i in interactions}
    per_customer = Counter(i["customer_id"] for i in unique.values())
    # The publisher SDK, end to end: it validates, then sends idempotently with acks=all.
    with Publisher(bootstrap, topic=names.interactions) as publisher:
        sent = publisher.publish_many(interactions)
    assert sent == len(interactions)
    bad = producer(bootstrap)
    for key, value in BAD:
        bad.send(names.interactions, key=key, value=value)
    bad.flush()
    bad.close()

    stop = threading.Event()
    serving = threading.Thread(
        target=run_roles,
        args=(
            app_root(settings, database_url),
            {"ingest", "relay", "project"},
            stop,
        ),
        kwargs={"bootstrap": bootstrap, "tuning": Tuning.fast()},
        name="alerting-pipeline",
        daemon=True,
    )
    serving.start()
    read_models = ReadModelStore(make_store(database_url))
    try:

        def caught_up() -> bool:
            for customer_id, expected in per_customer.items():
                model = read_models.get(customer_id)
                if model is None or model.applied_version != expected + 1:
                    return False
            return not read_models.due(datetime.now(UTC) - timedelta(seconds=3))

        wait_until(caught_up, timeout=90, what="the alerting pipeline caught up")
        dlq, partitions = names.interactions_dlq, names.partitions()[names.interactions_dlq]
        wait_until(
            lambda: len(read_topic(bootstrap, dlq, partitions)) == len(BAD),
            timeout=30,
            what="the bad input dead-lettered onto the DLQ topic",
        )
    finally:
        stop.set()
        serving.join(timeout=30)
    assert not serving.is_alive(), "the roles did not stop"
    return AlertingRun(
        bootstrap=bootstrap,
        names=names,
        database_url=database_url,
        settings=settings,
        published=len(interactions) + len(BAD),
        stored=_count(database_url, "interaction_keys"),
    )
