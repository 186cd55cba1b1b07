"""Tamper evidence that survives a database superuser (issue 10, item 2).

Each tampering is done as the PostgreSQL superuser, with the immutability triggers
switched off (``session_replication_role = replica``), after a checkpoint was taken;
`verify --history --against` must name the customer and the version. A negative
control with no tampering, and events recorded after the checkpoint, passes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row

from adapters.chain import link
from adapters.checkpoint import Head, merkle_root
from adapters.store import CustomerStore
from domain.customer import customer_uuid
from tests.conftest import StoreFactory
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

CUSTOMERS = [f"tc-{n}" for n in range(5)]


def purchase(customer: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "source": "shop",
        "customer_id": customer,
        "kind": "purchase",
        "occurred_at": f"2025-0{n + 1}-01T10:00:00Z",
        "amount": f"{10 + n}.00",
        "currency": "EUR",
    }


@dataclass
class Store:
    url: str
    store: CustomerStore
    checkpoint: Path


@pytest.fixture
def checkpointed(fresh_database_url: str, make_store: StoreFactory, tmp_path: Path) -> Store:
    store = make_store(fresh_database_url)
    store.record([purchase(c, n) for c in CUSTOMERS for n in range(4)])
    run(fresh_database_url, "rebuild")
    out = tmp_path / "cp.json"
    summary = json.loads(run(fresh_database_url, "checkpoint", "--out", str(out), "--json").stdout)
    assert summary["customers"] == len(CUSTOMERS)
    assert summary["events"] == len(CUSTOMERS) * 5  # each customer's creation too
    return Store(fresh_database_url, store, out)


@pytest.fixture
def superuser(fresh_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET session_replication_role = replica")  # the triggers stay silent
        yield conn


def against(s: Store) -> dict[str, Any]:
    result = run(
        s.url, "verify", "--history", "--against", str(s.checkpoint), "--json", check=False
    )
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1)
    return report


def found(report: dict[str, Any], kind: str) -> list[tuple[str, int]]:
    examples = report["checkpoint"]["checks"][kind]["examples"]
    return [(e["customer_id"], e["version"]) for e in examples]


def test_no_tampering_passes_even_with_events_recorded_after_the_checkpoint(
    checkpointed: Store,
) -> None:
    report = against(checkpointed)
    assert report["ok"], report
    checkpointed.store.record([purchase("tc-0", 9), purchase("tc-new", 1)])
    run(checkpointed.url, "rebuild")
    report = against(checkpointed)
    assert report["ok"], report["checkpoint"]
    assert report["checkpoint"]["covered_events"] == len(CUSTOMERS) * 5


def test_a_deleted_tail_event_is_found(checkpointed: Store, superuser: Any) -> None:
    superuser.execute(
        "DELETE FROM customer_events WHERE originator_id = %s AND originator_version = 5",
        (customer_uuid("tc-1"),),
    )
    report = against(checkpointed)
    assert report["history"]["breaks"] == [], "the chain left behind is self-consistent"
    assert found(report, "events_deleted") == [("tc-1", 5)]
    assert not report["ok"]


def test_a_recomputed_chain_is_found(checkpointed: Store, superuser: Any) -> None:
    customer = customer_uuid("tc-2")
    rows = superuser.execute(
        "SELECT originator_version, topic, state, chain_hash FROM customer_events "
        "WHERE originator_id = %s ORDER BY originator_version",
        (customer,),
    ).fetchall()
    previous = bytes(rows[1]["chain_hash"])  # v2 stays; v3 gets a new amount
    for row in rows[2:]:
        state = orjson.loads(row["state"])
        if row["originator_version"] == 3:
            state["amount"] = "9999.00"
        data = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
        previous = link(previous, customer, row["originator_version"], row["topic"], data)
        superuser.execute(
            "UPDATE customer_events SET state = %s, chain_hash = %s "
            "WHERE originator_id = %s AND originator_version = %s",
            (data, previous, customer, row["originator_version"]),
        )
    report = against(checkpointed)
    assert report["history"]["breaks"] == [], "the rewritten chain verifies on its own"
    assert found(report, "chain_rewritten") == [("tc-2", 5)]
    assert not report["ok"]


def test_a_removed_customer_is_found(checkpointed: Store, superuser: Any) -> None:
    for table, column in (
        ("customer_events", "originator_id"),
        ("interaction_keys", "customer_id"),
    ):
        superuser.execute(
            f"DELETE FROM {table} WHERE {column} = %s",
            (customer_uuid("tc-3"),),
        )
    superuser.execute("DELETE FROM read_models WHERE customer_id = 'tc-3'")
    report = against(checkpointed)
    assert found(report, "customer_removed") == [("tc-3", 5)]
    assert not report["ok"]


def test_an_inserted_forged_row_is_found(checkpointed: Store, superuser: Any) -> None:
    customer = customer_uuid("tc-4")
    head = superuser.execute(
        "SELECT chain_hash FROM customer_events WHERE originator_id = %s "
        "AND originator_version = 5",
        (customer,),
    ).fetchone()
    state = orjson.dumps(
        {**purchase("tc-4", 0), "event_id": "forged", "digest": "x", "timestamp": None},
        option=orjson.OPT_SORT_KEYS,
    )
    topic = "domain.customer:Customer.InteractionRecorded"
    forged = link(bytes(head["chain_hash"]), customer, 6, topic, state)
    # A row slipped into the past: a position the checkpoint covers.
    superuser.execute(
        "INSERT INTO customer_events (notification_id, originator_id, originator_version,"
        " topic, state, chain_hash) VALUES (0, %s, 6, %s, %s, %s)",
        (customer, topic, state, forged),
    )
    report = against(checkpointed)
    assert report["history"]["breaks"] == []
    assert found(report, "inserted_row") == [("tc-4", 6)]
    assert not report["ok"]


def test_an_altered_checkpoint_file_is_refused(checkpointed: Store) -> None:
    data = json.loads(checkpointed.checkpoint.read_text())
    data["heads"] = data["heads"][1:]
    checkpointed.checkpoint.write_text(json.dumps(data))
    result = run(
        checkpointed.url,
        "verify",
        "--history",
        "--against",
        str(checkpointed.checkpoint),
        check=False,
    )
    assert result.returncode == 2
    assert "invalid_checkpoint" in result.stderr


def test_the_root_is_a_merkle_root_over_the_heads_in_aggregate_order(checkpointed: Store) -> None:
    data = json.loads(checkpointed.checkpoint.read_text())
    heads = sorted(
        (
            Head(h["customer_id"], h["version"], bytes.fromhex(h["chain_hash"]))
            for h in data["heads"]
        ),
        key=lambda h: h.customer.bytes,
    )
    assert merkle_root([h.leaf() for h in heads]).hex() == data["root"]
    with psycopg.connect(checkpointed.url, row_factory=dict_row) as conn:
        stored = conn.execute("SELECT root, customers FROM checkpoints").fetchall()
    assert stored == [{"root": data["root"], "customers": len(CUSTOMERS)}]


def test_a_damaged_row_is_broken_in_history_and_refused_by_customer(
    checkpointed: Store, superuser: Any
) -> None:
    superuser.execute(
        "UPDATE customer_events SET state = '\\x7b6e6f74206a736f6e'::bytea "
        "WHERE originator_id = %s AND originator_version = 3",
        (customer_uuid("tc-0"),),
    )
    shown = run(checkpointed.url, "history", "tc-0")
    assert "BROKEN" in shown.stdout
    assert "Traceback" not in shown.stderr
    history = json.loads(run(checkpointed.url, "history", "tc-0", "--json").stdout)
    assert [e["version"] for e in history["events"] if e["broken"]] == [3]
    assert history["events"][2]["state"]["broken"].startswith("stored bytes do not decode")
    view = run(checkpointed.url, "customer", "tc-0", check=False)
    assert view.returncode == 1
    assert "damaged_event" in view.stderr
    assert "Traceback" not in view.stderr
    report = against(checkpointed)
    assert report["history"]["breaks"][0]["customer_id"] == "tc-0"
    assert report["history"]["breaks"][0]["version"] == 3
    assert report["checks"]["damaged_event"]["examples"] == [{"customer_id": "tc-0", "version": 3}]


def test_the_periodic_step_stores_writes_and_publishes_checkpoints(
    fresh_database_url: str, make_store: StoreFactory, tmp_path: Path
) -> None:
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415
    import uuid  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    from adapters.checkpoint import load_file, run_periodically  # noqa: PLC0415
    from adapters.topics import ensure_topics, read_topic  # noqa: PLC0415
    from infra.broker import embedded_broker  # noqa: PLC0415
    from infra.kafka import producer  # noqa: PLC0415

    store = make_store(fresh_database_url)
    store.record([purchase("tp-1", 1)])
    with embedded_broker() as broker:
        topic = f"t{uuid.uuid4().hex[:8]}.checkpoints"
        ensure_topics(broker.bootstrap, [topic], partitions=1)
        stop = threading.Event()
        step = threading.Thread(
            target=run_periodically,
            args=(store, producer(broker.bootstrap), topic, stop),
            kwargs={"interval": 0.2, "clock": lambda: datetime.now(UTC), "directory": tmp_path},
        )
        step.start()
        try:
            while len(list(tmp_path.glob("checkpoint-*.json"))) < 2 and step.is_alive():
                time.sleep(0.1)
        finally:
            stop.set()
            step.join()
        files = sorted(tmp_path.glob("checkpoint-*.json"))
        assert len(files) >= 2
        checkpoint = load_file(files[0])
        assert [(h.customer_id, h.version) for h in checkpoint.heads] == [("tp-1", 2)]
        published = [json.loads(r.value) for r in read_topic(broker.bootstrap, topic)]
        assert checkpoint.root in {m["root"] for m in published}
