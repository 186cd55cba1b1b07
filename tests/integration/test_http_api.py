"""The HTTP API against a real server on a real PostgreSQL: roles, intake, reads, ops
actions, health and metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.crypto import MasterKey
from adapters.webhooks import add_subscription
from tests.integration.apiserver import RunningApi, running_api

pytestmark = pytest.mark.integration

ANONYMOUS, UNKNOWN = "anonymous", "unknown-token"
CALLERS = (ANONYMOUS, UNKNOWN, "producer", "ops", "auditor", "admin")


@pytest.fixture(scope="module")
def api(pg_admin_url: str) -> Iterator[RunningApi]:
    from tests.conftest import scratch_database  # noqa: PLC0415

    with scratch_database(pg_admin_url) as url, running_api(url) as running:
        yield running


def client(api: RunningApi, caller: str) -> httpx.Client:
    headers = {}
    if caller == UNKNOWN:
        headers = {"Authorization": "Bearer ecrm_not-a-real-token"}
    elif caller != ANONYMOUS:
        headers = api.headers(caller)
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


def interaction(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"http-{uuid.uuid4().hex}",
        "source": "shop",
        "customer_id": f"http-{uuid.uuid4().hex[:8]}",
        "kind": "purchase",
        "occurred_at": "2026-01-10T12:00:00Z",
        "amount": "19.90",
        "currency": "EUR",
        **overrides,
    }


@dataclass(frozen=True)
class Cell:
    """One endpoint of the matrix: who may call it and what success looks like."""

    name: str
    method: str
    path: str
    allowed: frozenset[str]
    ok: int
    body: Any = None


def matrix(api: RunningApi) -> list[Cell]:
    customer = api.services.read_models.alerts(state="open", limit=1)[0].customer_id
    alerts = [row.alert_id for row in api.services.read_models.alerts(state="open", limit=6)]
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    api.services.tokens.create(name=victim, role="producer")
    hook = add_subscription(
        api.services.store.datastore,
        MasterKey.from_text(api.services.settings.master_key or ""),
        url="http://127.0.0.1:9/hook",
        levels="critical",
        secret="s3cret",
        secret_source="test",
    )
    public = frozenset(CALLERS)
    readers = frozenset({"ops", "auditor"})
    return [
        Cell("healthz", "GET", "/healthz", public, 200),
        Cell("metrics", "GET", "/metrics", public, 200),
        Cell("openapi", "GET", "/openapi.json", public, 200),
        Cell(
            "post interactions",
            "POST",
            "/v1/interactions",
            frozenset({"producer"}),
            202,
            [interaction()],
        ),
        Cell("customer", "GET", f"/v1/customers/{customer}", readers, 200),
        Cell("history", "GET", f"/v1/customers/{customer}/history", readers, 200),
        Cell("replay", "GET", f"/v1/customers/{customer}/replay", readers, 200),
        Cell("alerts", "GET", "/v1/alerts?level=critical&limit=5", readers, 200),
        Cell(
            "acknowledge",
            "POST",
            f"/v1/alerts/{alerts[3]}/acknowledge",
            frozenset({"ops"}),
            200,
            {"reason": "calling them"},
        ),
        Cell(
            "snooze",
            "POST",
            f"/v1/alerts/{alerts[4]}/snooze",
            frozenset({"ops"}),
            200,
            {"until": "2099-01-01T00:00:00Z"},
        ),
        Cell("resolve", "POST", f"/v1/alerts/{alerts[5]}/resolve", frozenset({"ops"}), 200),
        Cell("list tokens", "GET", "/v1/tokens", frozenset({"admin"}), 200),
        Cell(
            "create token",
            "POST",
            "/v1/tokens",
            frozenset({"admin"}),
            201,
            {"name": f"made-{uuid.uuid4().hex[:6]}", "role": "ops"},
        ),
        Cell("revoke token", "DELETE", f"/v1/tokens/{victim}", frozenset({"admin"}), 204),
        Cell("list webhooks", "GET", "/v1/webhooks", frozenset({"admin"}), 200),
        Cell(
            "add webhook",
            "POST",
            "/v1/webhooks",
            frozenset({"admin"}),
            201,
            {"url": "http://127.0.0.1:9/other", "levels": ["warning", "critical"]},
        ),
        Cell("remove webhook", "DELETE", f"/v1/webhooks/{hook.id}", frozenset({"admin"}), 200),
    ]


def test_every_role_reaches_exactly_its_endpoints(api: RunningApi) -> None:
    refused: list[str] = []
    for cell in matrix(api):
        for caller in CALLERS:
            with client(api, caller) as http:
                response = http.request(cell.method, cell.path, json=cell.body)
            if caller in cell.allowed:
                expected = cell.ok
            elif caller in {ANONYMOUS, UNKNOWN}:
                expected = 401
            else:
                expected = 403
            if response.status_code != expected:
                refused.append(f"{cell.name} as {caller}: {response.status_code} {response.text}")
            if expected in {401, 403}:
                body = response.json()
                assert body["code"] in {"unauthorized", "invalid_token", "forbidden"}
                assert body["message"]
    assert not refused, "\n".join(refused)


def test_personal_data_reaches_the_auditor_and_never_ops(api: RunningApi) -> None:
    customer = next(
        e.customer_id
        for e in api.services.read_models.alerts(state="open", limit=20)
        if any(
            (h.state.get("personal") or {}).get("profile", {}).get("email")
            for h in api.services.store.history(e.customer_id)
        )
    )
    email = next(
        h.state["personal"]["profile"]["email"]
        for h in api.services.store.history(customer)
        if (h.state.get("personal") or {}).get("profile", {}).get("email")
    )
    paths = [
        f"/v1/customers/{customer}",
        f"/v1/customers/{customer}/history",
        f"/v1/customers/{customer}/replay",
        "/v1/alerts?limit=500",
    ]
    with client(api, "auditor") as auditor:
        assert email in auditor.get(f"/v1/customers/{customer}/history").text
    with client(api, "ops") as ops:
        for path in paths:
            response = ops.get(path)
            assert response.status_code == 200
            assert email not in response.text, path
        history = ops.get(f"/v1/customers/{customer}/history").json()
    assert history["personal_data"] == "redacted"
    assert any(e["state"].get("personal") == "<redacted>" for e in history["events"])


def test_interactions_are_recorded_once_with_per_item_outcomes(api: RunningApi) -> None:
    good = interaction()
    bad = interaction(currency="EURO")
    conflicting = {**good, "amount": "20.00"}
    with client(api, "producer") as http:
        first = http.post("/v1/interactions", json=good)
        assert first.status_code == 202
        assert first.json()["results"][0]["outcome"] == "recorded"
        batch = http.post("/v1/interactions", json=[good, bad, conflicting])
    assert batch.status_code == 202
    results = batch.json()["results"]
    assert [r["outcome"] for r in results] == ["duplicate", "rejected", "rejected"]
    assert results[1]["rejections"][0]["code"] == "invalid_currency"
    assert results[1]["rejections"][0]["field"] == "currency"
    assert results[2]["rejections"][0]["code"] == "conflicting_duplicate"
    history = api.services.store.history(good["customer_id"])
    stored = [h for h in history if h.state.get("event_id") == good["event_id"]]
    assert len(stored) == 1, "exactly-once effect over HTTP"


def test_malformed_and_oversize_bodies_are_refused_with_codes(api: RunningApi) -> None:
    with client(api, "producer") as http:
        malformed = http.post(
            "/v1/interactions", content=b'{"kind": ', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["code"] == "malformed_json"
        limit = api.services.settings.http_max_body_bytes
        huge = http.post("/v1/interactions", content=b"[" + b" " * limit + b"]")
        assert huge.status_code == 413
        assert huge.json()["code"] == "oversize"
        empty = http.post("/v1/interactions", json=[])
        assert (empty.status_code, empty.json()["code"]) == (400, "empty")
        item = http.post("/v1/interactions", json=interaction(attributes={"x": "y" * 70_000}))
        assert item.status_code == 202
        assert item.json()["results"][0]["rejections"][0]["code"] in {
            "oversize",
            "attributes_too_large",
        }


def test_errors_are_json_with_code_message_and_field(api: RunningApi) -> None:
    with client(api, "auditor") as http:
        missing = http.get("/v1/customers/nobody-at-all")
        assert (missing.status_code, missing.json()["code"]) == (404, "customer_not_found")
        bad = http.get("/v1/customers/nobody/replay", params={"as_of": "yesterday"})
        assert bad.status_code == 400
        assert bad.json() == {
            "code": "invalid_timestamp",
            "message": "as_of is not an RFC 3339 instant",
            "field": "as_of",
        }
        unknown = http.get("/v1/nowhere")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
        wrong = http.get("/v1/alerts", params={"level": "apocalyptic"})
        assert (wrong.status_code, wrong.json()["field"]) == (400, "level")


def test_an_alert_acknowledged_over_http_shows_in_replay_with_who_and_when(
    api: RunningApi,
) -> None:
    alert_id, customer = api.open_alert()
    with client(api, "ops") as ops:
        acted = ops.post(f"/v1/alerts/{alert_id}/acknowledge", json={"reason": "on it"})
        assert acted.status_code == 200, acted.text
        assert acted.json()["alert_state"] == "acknowledged"
        again = ops.post(f"/v1/alerts/{alert_id}/resolve", json={"until": "2030-01-01T00:00Z"})
        assert (again.status_code, again.json()["field"]) == (400, "until")
    with client(api, "auditor") as auditor:
        steps = auditor.get(f"/v1/customers/{customer}/replay").json()["steps"]
        history = auditor.get(f"/v1/customers/{customer}/history").json()["events"]
    step = next(s for s in steps if s["kind"] == "alert_acknowledged")
    assert step["summary"]["alert_state"] == "acknowledged"
    change = next(c for c in step["changes"] if c["kind"] == "alert")
    assert change["to_value"] == "acknowledged"
    assert change["reasons"][0]["inputs"]["by"] == "ops-user"
    assert step["at"] == acted.json()["at"] or step["at"] <= acted.json()["at"]
    recorded = next(e for e in history if e["event"] == "AlertActionRecorded")
    assert recorded["state"]["by"] == "ops-user"
    assert recorded["state"]["alert_id"] == alert_id


def test_a_revoked_token_is_refused_at_once(api: RunningApi) -> None:
    token = api.services.tokens.create(name=f"short-{uuid.uuid4().hex[:6]}", role="ops")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api.url, headers=headers) as http:
        assert http.get("/v1/alerts").status_code == 200
        name = next(
            t.name for t in api.services.tokens.list() if t.last_used_at and "short-" in t.name
        )
        api.services.tokens.revoke(name)
        refused = http.get("/v1/alerts")
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")


def test_alerts_are_filtered_and_paginated_most_at_risk_first(api: RunningApi) -> None:
    with client(api, "ops") as http:
        first = http.get("/v1/alerts", params={"limit": 3}).json()
        second = http.get("/v1/alerts", params={"limit": 3, "offset": 3}).json()
        critical = http.get("/v1/alerts", params={"level": "critical", "limit": 500}).json()
    scores = [a["churn_score"] for a in first["alerts"] + second["alerts"]]
    assert scores == sorted(scores, reverse=True)
    assert not {a["alert_id"] for a in first["alerts"]} & {a["alert_id"] for a in second["alerts"]}
    assert first["next_offset"] == 3
    assert all(a["churn_level"] == "critical" for a in critical["alerts"])
    assert all("top_reasons" in a for a in first["alerts"])


def test_health_readiness_and_metrics(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        metrics = http.get("/metrics").text
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"]
    for name in (
        "eventcrm_interactions_recorded_total",
        "eventcrm_dead_letters_total",
        "eventcrm_relay_lag_events",
        "eventcrm_projector_lag_events",
        "eventcrm_open_alerts",
        "eventcrm_http_request_duration_seconds_bucket",
        "eventcrm_http_interactions_total",
    ):
        assert name in metrics, name
