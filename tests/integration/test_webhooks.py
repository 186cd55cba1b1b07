"""Signed webhooks against a real pipeline's alerts: a local receiver (the one in
docs/examples) verifies every signature; a receiver that is down for a while, long
enough to be marked dead, gets every alert once it is back; a deliverer killed in the
middle of a delivery and started again loses nothing (ADR 0023)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest

from adapters.crypto import MasterKey
from adapters.webhooks import add_subscription, list_subscriptions, notification_of
from infra.bootstrap import Root, build_store
from infra.serve import Tuning, run_roles
from tests.conftest import TEST_MASTER_KEY, settings_for
from tests.integration.alerting import AlertingRun
from tests.integration.test_pipeline import wait_until

pytestmark = pytest.mark.integration

EVENTCRM = str(Path(sys.executable).parent / "eventcrm")
DOCS = Path(__file__).parents[2] / "docs" / "examples"
SECRET = "whsec_test-secret-for-the-receiver"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver_example = load_example("webhook_receiver")


def expected_keys(alerts: list[dict[str, Any]], levels: set[str]) -> set[str]:
    """The idempotency keys a subscription at ``levels`` must receive: every opening
    transition at one of its levels, and every later transition of those alerts."""
    told: set[str] = set()
    keys: set[str] = set()
    for message in alerts:
        notification = notification_of(message)
        assert notification is not None, message
        if notification.level in levels or notification.alert_id in told:
            told.add(notification.alert_id)
            keys.add(notification.idempotency_key)
    return keys


class Receiver:
    """The docs example's server on a port, recording each verified new delivery."""

    def __init__(self, port: int = 0, *, fail: Callable[[], bool] = lambda: False) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fail = fail
        self.server = receiver_example.make_server("127.0.0.1", port, SECRET, self._on_alert)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def _on_alert(self, delivery: dict[str, Any]) -> None:
        if self._fail():
            raise RuntimeError("the receiver is failing")
        with self._lock:
            self.received.append(delivery)

    def keys(self) -> set[str]:
        with self._lock:
            return {d["idempotency_key"] for d in self.received}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def subscribe(url: str, receiver_url: str, levels: str) -> int:
    store = build_store(
        settings_for(url), url, MasterKey.from_text(TEST_MASTER_KEY), as_role="eventcrm_app"
    )
    try:
        added = add_subscription(
            store.datastore,
            store.master_key,
            url=receiver_url,
            levels=levels,
            secret=SECRET,
            secret_source="test",
        )
    finally:
        store.close()
    return added.id


def cli_env(url: str, run: AlertingRun) -> dict[str, str]:
    return {
        **os.environ,
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(url, user="eventcrm_app"),
        "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY,
        "EVENTCRM_KAFKA_BOOTSTRAP": run.bootstrap,
        "EVENTCRM_TOPIC_PREFIX": run.names.prefix,
        "EVENTCRM_POLICY": str(run.settings.policy),
    }


def eventcrm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTCRM, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_every_delivery_is_signed_and_a_dead_endpoint_is_listed_then_gets_every_alert(
    alerting: AlertingRun, fresh_database_url: str
) -> None:
    alerts = alerting.alerts()
    everything = expected_keys(alerts, {"warning", "critical"})
    critical = expected_keys(alerts, {"critical"})
    assert len(everything) > len(critical) > 0, "the alerting policy raises both levels"

    good = Receiver()
    down_port = free_port()  # nothing listens here yet: the endpoint is down
    good_id = subscribe(fresh_database_url, good.url, "warning,critical")
    down_id = subscribe(fresh_database_url, f"http://127.0.0.1:{down_port}/hooks", "critical")
    # A forged delivery is refused by the receiver: its checks can fail.
    forged = httpx.post(good.url, content=b"{}", headers={"Eventcrm-Signature": "t=1,v1=00"})
    assert forged.status_code == 401

    stop = threading.Event()
    settings = settings_for(fresh_database_url, topic_prefix=alerting.names.prefix)
    serving = threading.Thread(
        target=run_roles,
        args=(
            Root(
                settings,
                fresh_database_url,
                MasterKey.from_text(TEST_MASTER_KEY),
                as_role=settings.app_role,
            ),
            {"webhooks"},
            stop,
        ),
        kwargs={"bootstrap": alerting.bootstrap, "tuning": Tuning.fast()},
        daemon=True,
    )
    serving.start()
    late: Receiver | None = None
    try:
        wait_until(lambda: good.keys() == everything, timeout=60, what="every alert delivered")

        def down_is_dead() -> bool:
            [down] = list_subscriptions_of(fresh_database_url, down_id)
            return down.status == "dead"

        wait_until(down_is_dead, timeout=60, what="the failing endpoint marked dead")
        listed = eventcrm(cli_env(fresh_database_url, alerting), "webhook", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        by_id = {s["id"]: s for s in json.loads(listed.stdout)}
        assert by_id[down_id]["status"] == "dead"
        assert by_id[down_id]["pending"] == len(critical), "kept, not dropped"
        assert by_id[down_id]["last_error"]
        assert by_id[good_id]["status"] == "active"
        assert by_id[good_id]["delivered"] == len(everything)

        # The endpoint comes back (and fails a little longer): it gets every alert.
        back = time.monotonic()
        late = Receiver(down_port, fail=lambda: time.monotonic() - back < 2)
        wait_until(lambda: late.keys() == critical, timeout=60, what="the backlog delivered")
        wait_until(
            lambda: list_subscriptions_of(fresh_database_url, down_id)[0].status == "active",
            timeout=10,
            what="the endpoint no longer dead",
        )
    finally:
        stop.set()
        serving.join(timeout=30)
        good.close()
        if late is not None:
            late.close()
    assert not serving.is_alive()
    openings = [d for d in late.received if d["transition"] in {"raised", "escalated"}]
    assert openings
    assert all(d["level"] == "critical" for d in openings)
    for delivery in good.received:
        assert delivery["alert"]["alert_id"] == delivery["alert_id"]
        assert delivery["idempotency_key"].startswith(delivery["alert_id"] + "/")


def list_subscriptions_of(url: str, subscription: int) -> list[Any]:
    store = build_store(
        settings_for(url), url, MasterKey.from_text(TEST_MASTER_KEY), as_role="eventcrm_app"
    )
    try:
        return list_subscriptions(store.datastore, ids=[subscription])
    finally:
        store.close()


def delivered_count(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'delivered'),"
            " count(*) FILTER (WHERE state = 'pending') FROM webhook_deliveries"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_deliverer_killed_mid_delivery_and_restarted_loses_nothing(
    alerting: AlertingRun, fresh_database_url: str
) -> None:
    alerts = alerting.alerts()
    everything = expected_keys(alerts, {"warning", "critical"})
    in_flight = threading.Event()
    calls: list[float] = []

    def slow() -> bool:
        calls.append(time.monotonic())
        if len(calls) == len(everything) // 3:
            in_flight.set()
            time.sleep(3)  # the deliverer is killed while this delivery waits
        return False

    receiver = Receiver(fail=slow)
    subscribe(fresh_database_url, receiver.url, "warning,critical")
    env = cli_env(fresh_database_url, alerting)
    serving = subprocess.Popen(
        [EVENTCRM, "serve", "--role", "webhooks"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(in_flight.is_set, timeout=60, what="a delivery in flight")
        serving.send_signal(signal.SIGKILL)
        serving.wait(timeout=10)
        delivered, pending = delivered_count(fresh_database_url)
        assert pending > 0
        assert delivered < len(everything)
        serving = subprocess.Popen(
            [EVENTCRM, "serve", "--role", "webhooks"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(
            lambda: delivered_count(fresh_database_url) == (len(everything), 0),
            timeout=90,
            what="every delivery done after the restart",
        )
    finally:
        if serving.poll() is None:
            serving.send_signal(signal.SIGTERM)
            serving.wait(timeout=40)
        receiver.close()
    assert receiver.keys() == everything, "nothing lost"
    # At least once: only the delivery in flight at the kill may have come twice.
    assert len(calls) <= len(everything) + 1


def test_webhook_commands_add_list_and_remove_with_coded_errors(
    alerting: AlertingRun, fresh_database_url: str
) -> None:
    env = cli_env(fresh_database_url, alerting)
    added = eventcrm(env, "webhook", "add", "https://ops.example.com/hook", "--levels", "critical")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.splitlines()[-1]
    assert secret.startswith("whsec_"), "the generated secret, alone on the last line"
    env_secret = {**env, "OPS_HOOK_SECRET": "whsec_from-the-environment"}
    from_env = eventcrm(
        env_secret,
        "webhook",
        "add",
        "https://pager.example.com/hook",
        "--levels",
        "warning,critical",
        "--secret-from-env",
        "OPS_HOOK_SECRET",
    )
    assert from_env.returncode == 0, from_env.stderr
    assert "whsec_" not in from_env.stdout + from_env.stderr, "a secret it was given is not shown"

    listed = eventcrm(env, "webhook", "list", "--json")
    subscriptions = json.loads(listed.stdout)
    assert [(s["url"], s["levels"], s["status"], s["secret_source"]) for s in subscriptions] == [
        ("https://ops.example.com/hook", ["critical"], "active", "generated"),
        (
            "https://pager.example.com/hook",
            ["warning", "critical"],
            "active",
            "env:OPS_HOOK_SECRET",
        ),
    ]
    assert secret not in listed.stdout
    with psycopg.connect(fresh_database_url) as conn:
        stored = conn.execute("SELECT secret FROM webhook_subscriptions").fetchall()
    assert all(secret.encode() not in bytes(row[0]) for row in stored), "stored wrapped"

    removed = eventcrm(env, "webhook", "remove", str(subscriptions[0]["id"]))
    assert removed.returncode == 0, removed.stderr
    left = json.loads(eventcrm(env, "webhook", "list", "--json").stdout)
    assert [s["url"] for s in left] == ["https://pager.example.com/hook"]

    for args, code in [
        (("webhook", "add", "ops.example.com/hook"), "invalid_url"),
        (("webhook", "add", "https://x.example/h", "--levels", "watch"), "invalid_levels"),
        (
            ("webhook", "add", "https://x.example/h", "--secret-from-env", "NOPE_UNSET"),
            "missing_secret",
        ),
        (("webhook", "remove", "999"), "unknown_webhook"),
        (("schema", "--topic", "nonsense"), "unknown_topic"),
    ]:
        failed = eventcrm(env, *args)
        assert failed.returncode == 2, (args, failed.stderr)
        assert f"[{code}]" in failed.stderr
        assert "Traceback" not in failed.stderr
