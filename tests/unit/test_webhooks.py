"""Webhook signing, the outbox entry of an alert transition, and the subscription
options: pure parts of adapters.webhooks, and the docs' receiver agreeing with them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from adapters.retry import WEBHOOK_DELIVERY
from adapters.webhooks import (
    SignatureError,
    check_url,
    new_secret,
    notification_of,
    parse_levels,
    sign,
    verify_signature,
)
from domain.errors import UsageError

SECRET = "whsec_unit"
BODY = b'{"alert_id": "alert-1"}'
NOW = 1_780_000_000


def receiver() -> ModuleType:
    path = Path(__file__).parents[2] / "docs" / "examples" / "webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("webhook_receiver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_signature_is_hmac_sha256_of_timestamp_dot_body_in_the_t_v1_scheme() -> None:
    header = sign(SECRET, NOW, BODY)
    assert header.startswith(f"t={NOW},v1=")
    assert len(header.rpartition("v1=")[2]) == 64
    assert verify_signature(SECRET, header, BODY, now=NOW + 10) == NOW


@pytest.mark.parametrize(
    ("secret", "header", "body", "now"),
    [
        ("whsec_other", None, BODY, NOW),  # another secret
        (SECRET, None, BODY + b" ", NOW),  # a changed body
        (SECRET, None, BODY, NOW + 301),  # too old: a replay
        (SECRET, "", BODY, NOW),  # no header
        (SECRET, "v1=abc", BODY, NOW),  # no timestamp
        (SECRET, f"t={NOW}", BODY, NOW),  # no signature
    ],
)
def test_a_wrong_stale_or_malformed_signature_is_refused(
    secret: str, header: str | None, body: bytes, now: int
) -> None:
    signed = sign(SECRET, NOW, BODY) if header is None else header
    with pytest.raises(SignatureError):
        verify_signature(secret, signed, body, now=now)
    assert not receiver().verify(secret, signed, body, now=now)


def test_the_docs_receiver_accepts_what_eventcrm_signs_even_beside_an_old_signature() -> None:
    header = sign(SECRET, NOW, BODY) + ",v1=" + "0" * 64
    assert receiver().verify(SECRET, header, BODY, now=NOW)
    assert verify_signature(SECRET, header, BODY, now=NOW) == NOW


def test_generated_secrets_are_long_and_distinct() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(first) > 40


def alert(to_value: str, *, level: str | None = None, at: str = "2026-05-30T10:00:00+00:00") -> Any:
    reasons = [{"rule": "alert", "inputs": {"level": level}}] if level else []
    return {
        "change_id": "chg-1",
        "customer_id": "c-1",
        "kind": "alert",
        "from_value": "none",
        "to_value": to_value,
        "effective_at": at,
        "reasons": reasons,
        "alert_id": "alert-1",
    }


def test_the_idempotency_key_is_the_alert_id_and_the_transition() -> None:
    first = notification_of(alert("raised", level="warning"))
    assert first is not None
    assert first.idempotency_key == "alert-1/raised@2026-05-30T10:00:00+00:00"
    again = notification_of(alert("raised", level="warning", at="2026-06-30T10:00:00+00:00"))
    assert again is not None
    assert again.idempotency_key != first.idempotency_key, "the same state reached again"


@pytest.mark.parametrize(
    ("message", "level"),
    [
        (alert("raised", level="warning"), "warning"),
        (alert("raised", level="critical"), "critical"),
        (alert("raised"), "warning"),
        (alert("escalated"), "critical"),
        (alert("acknowledged"), None),
        (alert("auto_resolved"), None),
    ],
)
def test_an_opening_transition_carries_its_level_and_a_follow_up_none(
    message: dict[str, Any], level: str | None
) -> None:
    notification = notification_of(message)
    assert notification is not None
    assert notification.level == level


def test_the_body_carries_the_alert_message_whole() -> None:
    message = alert("raised", level="warning")
    notification = notification_of(message)
    assert notification is not None
    body = orjson.loads(notification.body("warning"))
    assert body["alert"] == message
    assert (body["type"], body["level"], body["transition"]) == (
        "churn_alert.raised",
        "warning",
        "raised",
    )


def test_a_message_that_is_no_alert_change_has_no_notification() -> None:
    assert notification_of({**alert("raised"), "kind": "tier"}) is None
    assert notification_of({**alert("raised"), "alert_id": None}) is None


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("warning,critical", ("warning", "critical")),
        ("critical, warning", ("warning", "critical")),
        ("CRITICAL", ("critical",)),
    ],
)
def test_levels_are_read_from_a_comma_list(text: str, levels: tuple[str, ...]) -> None:
    assert parse_levels(text) == levels


@pytest.mark.parametrize("text", ["", "watch", "warning,loud"])
def test_an_unknown_level_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_levels(text)
    assert refused.value.code == "invalid_levels"


@pytest.mark.parametrize("url", ["ftp://x/y", "example.com/hook", "http://", "https:///x"])
def test_a_url_that_is_not_http_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_url(url)
    assert refused.value.code == "invalid_url"


def test_the_delivery_backoff_doubles_up_to_its_cap() -> None:
    steady = WEBHOOK_DELIVERY.max_wait * (1 - WEBHOOK_DELIVERY.jitter)
    waits = [WEBHOOK_DELIVERY.wait_before(n) for n in range(1, 16)]
    assert waits[0] >= WEBHOOK_DELIVERY.first_wait * (1 - WEBHOOK_DELIVERY.jitter)
    assert waits[4] > waits[0] * 8
    assert all(steady <= w <= WEBHOOK_DELIVERY.max_wait for w in waits[10:])
