"""`eventcrm token` and `eventcrm serve --role api`, as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import TEST_MASTER_KEY, alerting_policy

pytestmark = pytest.mark.integration

EVENTCRM = str(Path(sys.executable).parent / "eventcrm")


def environment(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "EVENTCRM_DATABASE_URL": psycopg.conninfo.make_conninfo(url, user="eventcrm_app"),
        "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY,
        "EVENTCRM_HOME": "/nonexistent-eventcrm-home",
        "EVENTCRM_POLICY": str(alerting_policy()),
    }


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTCRM, *args], env=environment(url), capture_output=True, text=True, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tokens_are_printed_once_listed_without_secrets_and_refused_once_revoked(
    fresh_database_url: str,
) -> None:
    url = fresh_database_url
    created = run(url, "token", "create", "--role", "producer", "--name", "shop")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("ecrm_")
    assert " " not in token
    assert run(url, "token", "create", "--role", "producer", "--name", "shop").returncode == 2
    assert run(url, "token", "create", "--role", "boss", "--name", "x").returncode == 2

    port = free_port()
    serving = subprocess.Popen(
        [EVENTCRM, "serve", "--role", "api", "--http", f"127.0.0.1:{port}"],
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert serving.poll() is None, serving.stderr.read() if serving.stderr else ""
        item = {
            "event_id": "e-1",
            "source": "shop",
            "customer_id": "c-1",
            "kind": "login",
            "occurred_at": "2026-01-01T00:00:00Z",
        }
        headers = {"Authorization": f"Bearer {token}"}
        accepted = httpx.post(f"{base}/v1/interactions", json=item, headers=headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["recorded"] == 1
        assert httpx.get(f"{base}/openapi.json").json()["paths"]["/v1/interactions"]

        listed = run(url, "token", "list", "--json")
        assert token not in listed.stdout
        (shop,) = json.loads(listed.stdout)
        assert (shop["name"], shop["role"]) == ("shop", "producer")
        assert shop["last_used_at"] is not None

        assert run(url, "token", "revoke", "shop").returncode == 0
        refused = httpx.post(f"{base}/v1/interactions", json=item, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
        assert run(url, "token", "revoke", "nobody").returncode == 2
    finally:
        serving.send_signal(signal.SIGTERM)
        serving.communicate(timeout=30)
    assert serving.returncode == 0
