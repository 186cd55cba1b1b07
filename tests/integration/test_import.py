"""Bulk import against a real PostgreSQL: idempotent, lossless, same format as record()."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from adapters.crypto import MasterKey
from adapters.importer import BulkImporter, LineRejected, PreparerConfig
from adapters.simulate import interactions
from adapters.store import CustomerStore
from domain.customer import customer_uuid
from infra.bootstrap import build_store, datastore_kwargs
from infra.schema import SchemaNotMigratedError
from tests.conftest import TEST_MASTER_KEY, StoreFactory, settings_for

pytestmark = pytest.mark.integration

BAD_LINES = {
    3: b'{"event_id": "x", "source": "shop"',
    7: b'{"event_id": "y", "source": "shop", "customer_id": "c", "kind": "purchase", '
    b'"occurred_at": "2025-01-01T00:00:00", "amount": "1.00", "currency": "EUR"}',
}


def sample_lines(prefix: str, customers: int = 12, per_customer: int = 6) -> list[bytes]:
    lines = []
    for item in interactions(customers=customers, per_customer=per_customer, seed=5):
        item["customer_id"] = f"{prefix}-{item['customer_id']}"
        item["event_id"] = f"{prefix}-{item['event_id']}"
        lines.append(orjson.dumps(item))
    for number, bad in sorted(BAD_LINES.items()):
        lines.insert(number - 1, bad)
    return lines


def good_lines(prefix: str, customers: int, per_customer: int) -> list[bytes]:
    lines = sample_lines(prefix, customers, per_customer)
    return [line for n, line in enumerate(lines, start=1) if n not in BAD_LINES]


def importer_for(
    store: CustomerStore, url: str, *, workers: int = 0, batch_size: int = 20
) -> BulkImporter:
    settings = settings_for(url)
    return BulkImporter(
        store,
        batch_size=batch_size,
        clock=lambda: datetime.now(UTC),
        workers=workers,
        worker_config=PreparerConfig(
            datastore=datastore_kwargs(url, settings, role=settings.app_role),
            master_key=TEST_MASTER_KEY,
            max_future_skew=store.max_future_skew,
            cache_size=1000,
        ),
    )


def comparable(store: CustomerStore, customer_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    """A customer's history minus what legitimately differs between two stores: the
    recording time, and the digest (keyed by each store's own customer data key)."""
    rows = []
    for entry in store.history(customer_id):
        state = {k: v for k, v in entry.state.items() if k not in {"timestamp", "digest"}}
        rows.append((entry.version, entry.topic, state))
    return rows


def test_an_import_records_the_good_lines_and_reports_the_bad_ones_by_line(
    store: CustomerStore, database_url: str, unique: str
) -> None:
    lines = sample_lines(unique)
    rejected: list[LineRejected] = []
    summary = importer_for(store, database_url).run(lines, on_reject=rejected.append)

    good = len(lines) - len(BAD_LINES)
    assert (summary.lines, summary.recorded, summary.duplicate, summary.rejected) == (
        len(lines),
        good,
        0,
        len(BAD_LINES),
    )
    assert {r.line: r.rejections[0].code for r in rejected} == {
        3: "malformed_json",
        7: "missing_offset",
    }
    assert summary.customers_created == 12
    with psycopg.connect(database_url) as conn:
        letters = conn.execute(
            "SELECT code, provenance->>'import_line' FROM dead_letters WHERE payload = ANY(%s)",
            (list(BAD_LINES.values()),),
        ).fetchall()
    assert sorted(letters) == [("malformed_json", "3"), ("missing_offset", "7")]


def test_importing_the_same_file_again_records_nothing_new(
    store: CustomerStore, database_url: str, unique: str
) -> None:
    lines = sample_lines(unique)
    importer = importer_for(store, database_url)
    first = importer.run(lines)
    again = importer.run(lines)

    assert again.recorded == 0
    assert again.duplicate == first.recorded
    assert again.customers_created == 0
    assert len(store.history(f"{unique}-cust-00000")) == 1 + 6


def test_a_changed_payload_under_a_known_key_is_a_conflict_on_reimport(
    store: CustomerStore, database_url: str, unique: str
) -> None:
    lines = good_lines(unique, customers=2, per_customer=3)
    importer = importer_for(store, database_url)
    importer.run(lines)
    changed = orjson.loads(lines[-1])
    changed["occurred_at"] = "2020-01-01T00:00:00Z"
    rejected: list[LineRejected] = []
    summary = importer.run([*lines, orjson.dumps(changed)], on_reject=rejected.append)

    assert summary.recorded == 0
    assert [r.rejections[0].code for r in rejected] == ["conflicting_duplicate"]


def test_the_fast_path_and_record_read_back_identically(
    fresh_database_url: str, pg_admin_url: str, make_store: StoreFactory, unique: str
) -> None:
    from tests.conftest import scratch_database  # noqa: PLC0415 - a second store of its own

    lines = sample_lines(unique)
    good = [orjson.loads(line) for n, line in enumerate(lines, start=1) if n not in BAD_LINES]
    imported = make_store(fresh_database_url)
    importer_for(imported, fresh_database_url).run(lines)
    with scratch_database(pg_admin_url) as other_url:
        recorded = make_store(other_url)
        for start in range(0, len(good), 25):
            recorded.record(good[start : start + 25])
        for n in range(12):
            customer = f"{unique}-cust-{n:05d}"
            assert comparable(imported, customer) == comparable(recorded, customer)
            a = imported.repository.get(customer_uuid(customer))
            b = recorded.repository.get(customer_uuid(customer))
            assert (a.version, a.interaction_count, a.last_occurred_at) == (
                b.version,
                b.interaction_count,
                b.last_occurred_at,
            )
        assert recorded.verify_chains().ok
    assert imported.verify_chains().ok


def test_worker_processes_prepare_the_same_result_as_in_process(
    fresh_database_url: str, make_store: StoreFactory, unique: str
) -> None:
    store = make_store(fresh_database_url)
    lines = sample_lines(unique, customers=30, per_customer=8)
    summary = importer_for(store, fresh_database_url, workers=2, batch_size=10).run(lines)

    assert summary.recorded == len(lines) - len(BAD_LINES)
    assert summary.rejected == len(BAD_LINES)
    report = store.verify_chains()
    assert report.ok
    assert report.events == summary.recorded + 30


def test_import_and_record_continue_each_others_chains(
    fresh_database_url: str, make_store: StoreFactory, unique: str
) -> None:
    store = make_store(fresh_database_url)
    customer = f"{unique}-cust-00000"
    lines = good_lines(unique, customers=1, per_customer=6)
    store.record([orjson.loads(lines[0])])  # record first (and cache the aggregate) ...
    importer_for(store, fresh_database_url).run(lines[1:4])  # ... then import behind its back
    outcomes = store.record([orjson.loads(line) for line in lines[4:]])  # stale cache: retried

    assert [o.status for o in outcomes] == ["recorded", "recorded"]
    assert [e.version for e in store.history(customer)] == list(range(1, 8))
    assert store.verify_chains().ok


def test_verify_reports_the_first_broken_link_after_tampering(
    fresh_database_url: str, make_store: StoreFactory, unique: str
) -> None:
    store = make_store(fresh_database_url)
    customer = f"{unique}-cust-00000"
    lines = good_lines(unique, customers=2, per_customer=5)
    store.record([orjson.loads(line) for line in lines])
    assert store.verify_chains().ok

    with psycopg.connect(fresh_database_url) as conn:  # the owner, going around the trigger
        conn.execute("ALTER TABLE customer_events DISABLE TRIGGER customer_events_immutable")
        conn.execute(
            "UPDATE customer_events SET state = overlay(state placing 'X'::bytea from 3 for 1) "
            "WHERE originator_id = %s AND originator_version = 4",
            (customer_uuid(customer),),
        )
        conn.execute("ALTER TABLE customer_events ENABLE TRIGGER customer_events_immutable")

    report = store.verify_chains()
    assert not report.ok
    assert [(b.customer, b.version) for b in report.breaks] == [(customer_uuid(customer), 4)]
    assert [e.chain_ok for e in store.history(customer)][3] is False


def test_a_database_without_the_schema_is_refused(pg_admin_url: str, unique: str) -> None:
    name = f"eventcrm_unmigrated_{unique}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name)
        with pytest.raises(SchemaNotMigratedError, match="eventcrm migrate"):
            build_store(settings_for(url), url, MasterKey.from_text(TEST_MASTER_KEY))
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_file_path_is_accepted_by_the_importer(
    tmp_path: Path, store: CustomerStore, database_url: str, unique: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(good_lines(unique, customers=2, per_customer=2)) + b"\n\n")
    with path.open("rb") as handle:
        summary = importer_for(store, database_url).run(handle)
    assert summary.recorded == 4
