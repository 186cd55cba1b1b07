"""The `eventcrm` console script end to end, against a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import TEST_MASTER_KEY, alerting_policy

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[2] / "infra" / "samples" / "interactions.jsonl"
AS_OF = "2026-01-01T00:00:00Z"


def run(
    database_url: str, *args: str, check: bool = True, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EVENTCRM_DATABASE_URL": database_url,
        "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY,
        "EVENTCRM_HOME": "/nonexistent-eventcrm-home",
        **({"EVENTCRM_POLICY": str(policy)} if policy else {}),
    }
    command = [str(Path(sys.executable).parent / "eventcrm"), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def test_schema_prints_the_contract_as_json_schema(fresh_database_url: str) -> None:
    schema = json.loads(run(fresh_database_url, "schema").stdout)
    assert "purchase" in json.dumps(schema)


def test_import_history_customer_replay_export_and_alerts_work_on_one_store(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    summary = json.loads(
        run(url, "import", str(SAMPLE), "--json", "--rejects", str(tmp_path / "r.jsonl")).stdout
    )
    assert summary["rejected"] == 3
    assert summary["recorded"] + summary["duplicate"] == summary["lines"] - 3
    rejects = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["rejections"][0]["code"] for r in rejects} == {
        "missing_offset",
        "wrong_type",
        "malformed_json",
    }

    again = json.loads(run(url, "import", str(SAMPLE), "--json").stdout)
    assert again["recorded"] == 0

    history = json.loads(run(url, "history", "cust-00007", "--json").stdout)
    assert history["events"][1]["state"]["personal"]["profile"]["email"].endswith("@example.com")
    assert all(e["chain_ok"] for e in history["events"])

    view = json.loads(run(url, "customer", "cust-00007", "--as-of", AS_OF, "--json").stdout)
    assert view["customer_id"] == "cust-00007"
    assert view["tier"] in {"none", "bronze", "silver", "gold", "platinum"}
    steps = json.loads(run(url, "replay", "cust-00007", "--as-of", AS_OF, "--json").stdout)
    assert len([s for s in steps["steps"] if s["event_id"]]) == len(history["events"]) - 1

    exported = run(url, "export", "--as-of", AS_OF, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 300
    assert {row["customer_id"] for row in rows} >= {"cust-00007"}
    same = next(r for r in rows if r["customer_id"] == "cust-00007")
    assert float(same["churn_score"]) == view["churn_score"]

    open_alerts = json.loads(run(url, "alerts", "list", "--as-of", AS_OF, "--json").stdout)
    assert open_alerts, "the sample's silent customers must have alerts by 2026"
    assert all(a["alert_open"] for a in open_alerts)

    assert run(url, "verify", "--json", check=False).returncode == 1, "no read models yet"
    run(url, "rebuild")
    assert run(url, "verify", "--json").returncode == 0
    assert run(url, "customer", "nobody", check=False).returncode == 1


def test_an_open_alert_can_be_acknowledged_and_the_action_is_folded(
    fresh_database_url: str,
) -> None:
    url = fresh_database_url
    now = datetime.now(UTC)

    def purchase(n: int, days_ago: int) -> dict[str, str]:
        return {
            "event_id": f"p-{n}",
            "source": "shop",
            "customer_id": "quiet-1",
            "kind": "purchase",
            "occurred_at": (now - timedelta(days=days_ago)).isoformat(),
            "amount": "50.00",
            "currency": "EUR",
        }

    # Every 10 days, then silent for 100: far beyond its own cadence, not yet churned.
    lines = [purchase(n, 100 + 10 * n) for n in range(8)]
    path_input = "\n".join(json.dumps(x) for x in lines) + "\n"
    subprocess.run(
        [str(Path(sys.executable).parent / "eventcrm"), "import", "-", "--json"],
        input=path_input,
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "EVENTCRM_DATABASE_URL": url, "EVENTCRM_MASTER_KEY": TEST_MASTER_KEY},
    )
    policy = alerting_policy()
    before = json.loads(run(url, "customer", "quiet-1", "--json", policy=policy).stdout)
    assert before["alert_open"], before
    result = run(
        url, "alerts", "ack", "quiet-1", "--by", "kim", "--reason", "calling", policy=policy
    )
    assert "acknowledged" in result.stdout
    after = json.loads(run(url, "customer", "quiet-1", "--json", policy=policy).stdout)
    assert after["alert_state"] == "acknowledged"
    assert after["alert_id"] == before["alert_id"]


def test_calibrate_and_backtest_run_as_a_user_runs_them(
    fresh_database_url: str, tmp_path: Path
) -> None:
    """The churn commands through the real console script: their heavy imports (scipy)
    load only when they run, and what they write is a policy eventcrm loads."""
    from adapters.simulate import simulate  # noqa: PLC0415 - a test-only generator

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    path = tmp_path / "population.jsonl"
    path.write_text(
        "".join(
            json.dumps(i) + "\n" for i in simulate(customers=600, seed=3, end=today).interactions
        )
    )
    url = fresh_database_url
    run(url, "import", str(path), "--json")
    report = json.loads(run(url, "backtest", "--json").stdout)
    assert report["customers"] > 0
    assert set(report["policy"]) >= {"alerts", "precision", "recall", "auc"}
    out = tmp_path / "calibrated.toml"
    fitted = json.loads(run(url, "calibrate", "--out", str(out), "--json").stdout)
    assert fitted["cutoffs"], fitted
    again = json.loads(run(url, "backtest", "--policy", str(out), "--json").stdout)
    assert again["customers"] == report["customers"]
