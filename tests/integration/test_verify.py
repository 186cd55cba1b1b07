"""`eventcrm verify` proves completeness (RELIABILITY G14): it compares sets, not only the
rows that exist, against a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.checker import verify
from adapters.readmodels import ReadModelStore, rebuild
from tests.conftest import StoreFactory
from tests.integration.test_cli import SAMPLE, run
from tests.integration.test_readmodels import POLICY, _record_history

pytestmark = pytest.mark.integration


def verify_cli(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = run(url, "verify", "--json", *args, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def counts(report: dict[str, Any]) -> dict[str, int]:
    """The kinds that found something, with their counts."""
    return {kind: check["count"] for kind, check in report["checks"].items() if check["count"]}


def test_verify_fails_on_missing_and_stale_read_models_not_only_on_unequal_ones(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "rejects.jsonl"))

    code, report = verify_cli(url)
    assert code == 1, "no read models at all: every stored customer lacks one"
    assert counts(report) == {"missing_read_model": 300}
    assert report["read_models"] == 0

    run(url, "rebuild")
    code, report = verify_cli(url)
    assert (code, counts(report)) == (0, {}), report
    assert report["ok"] is True
    assert report["customers"] == report["read_models"] == 300

    # The scenario: two rows deleted, one set back to an old version.
    with psycopg.connect(url, autocommit=True) as conn:
        deleted = [
            row[0]
            for row in conn.execute(
                "DELETE FROM read_models WHERE customer_id IN "
                "(SELECT customer_id FROM read_models ORDER BY customer_id LIMIT 2) "
                "RETURNING customer_id"
            )
        ]
        stale = conn.execute(
            "UPDATE read_models SET applied_version = 2 WHERE customer_id = "
            "(SELECT customer_id FROM read_models WHERE applied_version > 3 "
            " ORDER BY customer_id DESC LIMIT 1) RETURNING customer_id"
        ).fetchone()
    assert stale is not None

    code, report = verify_cli(url)
    assert code == 1
    assert report["ok"] is False
    found = counts(report)
    assert found.pop("missing_read_model") == 2
    assert found.pop("stale_read_model") == 1
    assert set(found) <= {"differs"}, found  # the stale row may also disagree field by field
    checks = report["checks"]
    assert sorted(e["customer_id"] for e in checks["missing_read_model"]["examples"]) == sorted(
        deleted
    )
    assert [e["customer_id"] for e in checks["stale_read_model"]["examples"]] == [stale[0]]
    assert report["lag"]["stale_read_models"] == 1
    assert report["lag"]["missing_read_models"] == 2
    assert "differences" in report  # the documented keys stay


def test_verify_fails_on_an_extra_read_model_and_on_keys_that_disagree_with_events(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    run(url, "import", str(SAMPLE), "--rejects", str(tmp_path / "rejects.jsonl"))
    run(url, "rebuild")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO read_models (customer_id, applied_version, applied_position, "
            "snapshot) VALUES ('nobody-in-the-store', 3, 3, '{}')"
        )
        # Keys are insert-only for the application role; the owner can still forge one
        # (a key naming no event) and remove one (an event without its key).
        conn.execute(
            "INSERT INTO interaction_keys (source, event_id, customer_id, "
            "originator_version, digest) SELECT source, event_id || '-forged', "
            "customer_id, originator_version + 1000, digest FROM interaction_keys LIMIT 1"
        )
        conn.execute(
            "DELETE FROM interaction_keys WHERE (source, event_id) IN "
            "(SELECT source, event_id FROM interaction_keys ORDER BY source, event_id LIMIT 1)"
        )

    code, report = verify_cli(url)
    assert code == 1
    assert counts(report) == {
        "extra_read_model": 1,
        "key_without_event": 1,
        "event_without_key": 1,
    }
    assert report["checks"]["extra_read_model"]["examples"] == [
        {"customer_id": "nobody-in-the-store", "applied_version": 3}
    ]


def test_read_models_left_evaluated_in_the_past_or_the_future_fail_verify(
    fresh_database_url: str, make_store: StoreFactory
) -> None:
    """What a rebuild as of another instant leaves: rows that no longer say what holds
    now (a deadline passed that no timer applied), or that hold the projector off."""
    store = make_store(fresh_database_url)
    for n in range(5):
        _record_history(store, f"v-{n}", ops=False)
    read_models = ReadModelStore(store)
    as_of = datetime(2025, 6, 1, tzinfo=UTC)
    rebuild(read_models, store, POLICY, as_of=as_of)

    def found(now: datetime) -> dict[str, int]:
        report = verify(store, read_models, POLICY, now=now, broker=None)
        return {kind: c.count for kind, c in report.checks.items() if c.count}

    assert found(as_of) == {}
    assert found(as_of + timedelta(days=365)) == {"overdue_timer": 5}
    assert found(as_of - timedelta(days=1)) == {"evaluated_in_future": 5}
