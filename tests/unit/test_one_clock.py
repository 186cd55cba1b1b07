"""One clock (ADR 0028): the wall clock is read in `infra/clock.py` only, and the clock
given to the composition root is the one a command and a role run on.
tests/integration/test_one_clock.py follows one fixed clock through the CLI, the HTTP API
and a `serve` role against PostgreSQL and Kafka."""

from __future__ import annotations

import ast
import pickle
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.crypto import MasterKey
from infra.bootstrap import Root
from infra.clock import system_clock
from infra.main import main
from tests.conftest import TEST_MASTER_KEY, settings_for

ROOT = Path(__file__).parents[2]
PACKAGES = ("domain", "projections", "streams", "adapters", "infra")

CLOCK_MODULE = Path("infra/clock.py")
SDK = Path("adapters/publisher.py")
"""The publisher SDK runs in upstream teams' processes, not in eventcrm's: its default
clock is theirs to inject (docs/publishing.md), so no root of ours wires it."""

WALL_CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
}
"""`module_or_class.attribute` spellings that read the wall clock (called or passed on).
Monotonic timers (`time.monotonic`, `time.perf_counter`) measure durations, not business
time, and are allowed everywhere."""

FIXED = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED


def wall_clock_reads(source: str) -> list[str]:
    """Each place ``source`` reads the wall clock, as ``name.attr`` at ``line``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in WALL_CLOCK_READS
        ):
            found.append(f"{node.value.id}.{node.attr} at line {node.lineno}")
    return found


def test_the_detector_finds_a_wall_clock_read_called_or_passed_on() -> None:
    source = (
        "from datetime import UTC, datetime\nimport time\n"
        "a = datetime.now(UTC)\nb = Deliverer(clock=time.time)\nc = time.monotonic()\n"
    )
    assert wall_clock_reads(source) == ["datetime.now at line 3", "time.time at line 4"]


def test_the_wall_clock_is_read_only_in_the_clock_module() -> None:
    reads = {
        str(path.relative_to(ROOT)): wall_clock_reads(path.read_text("utf-8"))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) != SDK
    }
    readers = {path: found for path, found in reads.items() if found}
    assert list(readers) == [str(CLOCK_MODULE)], readers
    assert len(readers[str(CLOCK_MODULE)]) == 1  # system_clock


def test_simulate_ends_on_the_day_of_the_clock_eventcrm_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    out = tmp_path / "sim.jsonl"
    argv = ["simulate", "--customers", "3", "--days", "30", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        main(argv, clock=fixed_clock)
    assert exit_.value.code == 0
    assert "30 days to 2031-02-03 00:00 UTC" in capsys.readouterr().err
    latest = max(
        datetime.fromisoformat(orjson.loads(line)["occurred_at"])
        for line in out.read_bytes().splitlines()
    )
    assert datetime(2031, 1, 1, tzinfo=UTC) < latest <= datetime(2031, 2, 3, tzinfo=UTC)


def test_a_root_on_the_system_clock_can_be_handed_to_a_role_process() -> None:
    root = Root(
        settings_for("postgresql://unused@127.0.0.1/unused"),
        "",
        MasterKey.from_text(TEST_MASTER_KEY),
    )
    again = pickle.loads(pickle.dumps(root))
    assert again.clock is system_clock
    assert again.settings == root.settings


def test_role_processes_refuse_a_clock_that_cannot_reach_them() -> None:
    from infra.serve import run_role_processes  # noqa: PLC0415 - faust only where it runs

    root = Root(
        settings_for("postgresql://unused@127.0.0.1/unused"),
        "",
        MasterKey.from_text(TEST_MASTER_KEY),
        clock=fixed_clock,
    )
    with pytest.raises(ValueError, match="system clock"):
        run_role_processes(root, {"ingest"}, threading.Event(), bootstrap="127.0.0.1:1")
