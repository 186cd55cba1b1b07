"""One clock (ADR 0028): a fixed clock given to eventcrm's composition root is the time
of a CLI command, of the HTTP API and of the `serve` roles, against real PostgreSQL and
Kafka. The fixed instant is years ahead of the wall clock, so an interaction that
happened "yesterday" by it is accepted only by a component that really runs on it (the
wall clock would refuse it as in the future)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.crypto import MasterKey
from adapters.readmodels import ReadModelStore
from adapters.topics import TopicNames, ensure_topics
from infra.api import http_app
from infra.bootstrap import Root
from infra.broker import EmbeddedBroker, embedded_broker
from infra.kafka import producer
from infra.main import main
from infra.serve import Tuning, run_roles
from tests.conftest import TEST_MASTER_KEY, StoreFactory, settings_for
from tests.integration.test_pipeline import wait_until

pytestmark = pytest.mark.integration

FIXED = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
YESTERDAY = FIXED - timedelta(days=1)
"""In the future by the wall clock (beyond any skew), in the past by the fixed clock."""


def fixed_clock() -> datetime:
    return FIXED


def purchase(customer_id: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"clock-{uuid.uuid4().hex}",
        "source": "shop",
        "customer_id": customer_id,
        "kind": "purchase",
        "occurred_at": at.isoformat(),
        "amount": "19.90",
        "currency": "EUR",
    }


def eventcrm(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    """Run one `eventcrm` command in this process on the fixed clock; (exit code, stdout)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv, clock=fixed_clock)
    return exit_.value.code, capsys.readouterr().out


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def test_a_fixed_clock_given_to_eventcrm_is_the_time_of_its_commands_and_its_http_api(
    fresh_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("EVENTCRM_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("EVENTCRM_MASTER_KEY", TEST_MASTER_KEY)
    tokens = {}
    for role in ("producer", "ops"):
        code, out = eventcrm(["token", "create", "--role", role, "--name", role], capsys)
        assert code == 0
        tokens[role] = out.strip().splitlines()[-1]

    # The HTTP API, built by the root: it accepts what happened yesterday by its clock,
    # records it at that clock's time, and replays as of it by default.
    settings = settings_for(fresh_database_url)
    root = Root(
        settings, fresh_database_url, MasterKey.from_text(TEST_MASTER_KEY), clock=fixed_clock
    )
    customer = f"clock-{uuid.uuid4().hex[:8]}"
    with http_app(root, broker=None) as app, TestClient(app) as http:
        posted = http.post(
            "/v1/interactions",
            json=purchase(customer, YESTERDAY),
            headers={"Authorization": f"Bearer {tokens['producer']}"},
        )
        assert posted.status_code == 202, posted.text
        assert posted.json()["results"][0]["outcome"] == "recorded", posted.text
        replay = http.get(
            f"/v1/customers/{customer}/replay",
            headers={"Authorization": f"Bearer {tokens['ops']}"},
        )
        assert replay.status_code == 200, replay.text
        assert datetime.fromisoformat(replay.json()["as_of"]) == FIXED

    # The CLI, on its runtime: the tokens were created at the fixed time, and their use
    # by the API above was stamped with it.
    code, out = eventcrm(["token", "list", "--json"], capsys)
    assert code == 0
    listed = {t["name"]: t for t in orjson.loads(out)}
    assert {datetime.fromisoformat(t["created_at"]) for t in listed.values()} == {FIXED}
    assert {datetime.fromisoformat(t["last_used_at"]) for t in listed.values()} == {FIXED}
    # ... and a command that reads "now" reads it from that clock.
    code, out = eventcrm(["customer", customer, "--json"], capsys)
    assert code == 0
    assert datetime.fromisoformat(orjson.loads(out)["evaluated_at"]) == FIXED


def test_events_recorded_through_the_store_carry_the_clock_of_the_root(
    fresh_database_url: str,
) -> None:
    settings = settings_for(fresh_database_url)
    root = Root(
        settings,
        fresh_database_url,
        MasterKey.from_text(TEST_MASTER_KEY),
        as_role=settings.app_role,
        clock=fixed_clock,
    )
    customer = f"clock-{uuid.uuid4().hex[:8]}"
    with root.services() as services:
        (outcome,) = services.store.record([purchase(customer, YESTERDAY)])
        assert outcome.status == "recorded"
        services.store.record_alert_action(
            customer, action="acknowledged", alert_id="alert-1", by="kim", reason="seen"
        )
        history = services.store.history(customer)
    assert [entry.topic.rsplit(".", 1)[-1] for entry in history] == [
        "Created",
        "InteractionRecorded",
        "AlertActionRecorded",
    ]
    assert {datetime.fromisoformat(str(e.state["timestamp"])) for e in history} == {FIXED}


def test_the_serve_roles_run_on_the_clock_of_their_root(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    names = TopicNames(prefix=f"c{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, names.all(), partitions=names.partitions())
    settings = settings_for(
        fresh_database_url, topic_prefix=names.prefix, checkpoint_interval_seconds=0.5
    )
    root = Root(
        settings,
        fresh_database_url,
        MasterKey.from_text(TEST_MASTER_KEY),
        as_role=settings.app_role,
        clock=fixed_clock,
    )
    store = make_store(fresh_database_url)
    read_models = ReadModelStore(store)
    recent, older = f"recent-{uuid.uuid4().hex[:6]}", f"older-{uuid.uuid4().hex[:6]}"
    stop = threading.Event()
    serving = threading.Thread(
        target=run_roles,
        args=(root, {"ingest", "relay", "project"}, stop),
        kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast(tick_interval=0.2)},
        daemon=True,
    )
    serving.start()
    try:
        client = producer(broker.bootstrap)
        for item in (
            purchase(recent, YESTERDAY),
            purchase(older, datetime(2026, 1, 5, tzinfo=UTC)),
        ):
            client.send(
                names.interactions, key=item["customer_id"].encode(), value=orjson.dumps(item)
            )
        client.flush()
        client.close()

        # ingest: yesterday by its clock is not in the future
        wait_until(lambda: len(store.history(recent)) == 2, timeout=60, what="the ingest")

        # project: the timer evaluates the long-silent customer at the fixed instant
        def evaluated_at_fixed() -> bool:
            model = read_models.get(older)
            return model is not None and model.evaluated_at == FIXED

        wait_until(evaluated_at_fixed, timeout=60, what="the projector's timer at the fixed clock")

        # relay: its checkpoint step stamps checkpoints with the same clock
        def checkpoint_times() -> set[datetime]:
            with psycopg.connect(fresh_database_url) as conn:
                return {row[0] for row in conn.execute("SELECT created_at FROM checkpoints")}

        wait_until(lambda: bool(checkpoint_times()), timeout=30, what="a checkpoint")
        assert checkpoint_times() == {FIXED}
    finally:
        stop.set()
        serving.join(timeout=60)
    assert not serving.is_alive()
