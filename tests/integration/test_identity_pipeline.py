"""Identity merge and unmerge on the live path: relay and faust projector (roles run by
`infra.serve`) against a real Tansu broker and PostgreSQL. The merged customer's events
after the merge, and late ones dated before it, land in the survivor's read model; the
read models equal a fresh replay that resolves the links; unmerging gives back exactly
the answers of histories that were never merged; the changes are published."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from adapters.identitycli import link
from adapters.readmodels import ReadModelStore, audit
from adapters.readside import ProjectionReader
from adapters.store import CustomerStore
from adapters.topics import TopicNames, ensure_topics
from infra.bootstrap import load_configured_policy
from infra.broker import EmbeddedBroker, embedded_broker
from infra.serve import Tuning, run_roles
from projections import fold, snapshot
from projections.identity import own
from tests.conftest import StoreFactory, app_root, settings_for
from tests.integration.test_identity import Runtime, purchase, seed
from tests.integration.test_pipeline import read_topic, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with embedded_broker() as running:
        yield running


def head(store: CustomerStore, customer: str) -> int:
    return store.heads([customer])[customer][0]


def test_merge_and_unmerge_flow_through_relay_and_projector(
    broker: EmbeddedBroker, fresh_database_url: str, make_store: StoreFactory
) -> None:
    prefix = f"i{uuid.uuid4().hex[:8]}."
    names = TopicNames(prefix=prefix)
    counts = names.partitions()
    ensure_topics(broker.bootstrap, names.all(), partitions=counts)
    store = make_store(fresh_database_url)
    settings = settings_for(fresh_database_url, topic_prefix=prefix)
    assert settings.master_key is not None
    policy = load_configured_policy(settings)
    reader = ProjectionReader(store, policy)
    read_models = ReadModelStore(store)
    suffix = uuid.uuid4().hex[:6]
    s, m = f"s-{suffix}", f"m-{suffix}"

    def caught_up(*customers: str) -> bool:
        for customer in customers:
            row = read_models.get(customer)
            if row is None or row.applied_version != head(store, customer):
                return False
        return True

    def live_equals_replay() -> None:
        found = audit(read_models, store, policy)
        assert (found.missing, found.extra, found.stale, found.ahead) == ([], [], [], [])
        assert found.differences == []

    stop = threading.Event()
    serving = threading.Thread(
        target=run_roles,
        args=(
            app_root(settings, fresh_database_url),
            {"relay", "project"},
            stop,
        ),
        kwargs={"bootstrap": broker.bootstrap, "tuning": Tuning.fast()},
        name="identity-pipeline",
        daemon=True,
    )
    serving.start()
    try:
        seed(store, s, m)
        wait_until(lambda: caught_up(s, m), timeout=60, what="both customers projected")
        alone = {c: read_models.get(c) for c in (s, m)}

        merged_at = datetime.now(UTC)
        link(Runtime(store, reader), "merged", s, m, by="kim", reason="same e-mail")
        store.record([purchase(m, 50, merged_at - timedelta(days=40), "700.00")])  # late
        store.record([purchase(m, 51, merged_at - timedelta(minutes=1), "20.00")])
        wait_until(lambda: caught_up(s, m), timeout=60, what="the merge projected")
        survivor, absorbed = read_models.get(s), read_models.get(m)
        assert survivor is not None
        assert absorbed is not None
        assert survivor.snapshot["purchase_count"] == 3 + 6 + 2
        assert absorbed.snapshot["merged_into"] == s
        assert absorbed.alert_id is None
        assert absorbed.next_deadline is None
        live_equals_replay()

        link(Runtime(store, reader), "unmerged", s, m, by="lee", reason="two people")
        wait_until(lambda: caught_up(s, m), timeout=60, what="the unmerge projected")
        live_equals_replay()
        for customer in (s, m):
            row = read_models.get(customer)
            assert row is not None
            assert "merged_into" not in row.snapshot
            never_merged = snapshot(
                fold(customer, own(reader.events(customer)), policy, as_of=row.evaluated_at)
            )
            assert row.snapshot == orjson.loads(orjson.dumps(never_merged.to_dict()))
        assert alone[s] is not None
        assert read_models.get(s).snapshot["purchase_count"] == 3  # type: ignore[union-attr]
    finally:
        stop.set()
        serving.join(timeout=30)
    assert not serving.is_alive(), "the roles did not stop"

    # The merge and the unmerge were published as changes, with the link's reasons.
    rules = set()
    for topic in names.changes():
        for record in read_topic(broker.bootstrap, topic, counts[topic]):
            change = orjson.loads(record.value)
            rules.update(r["rule"] for r in change["reasons"] if change["customer_id"] in (s, m))
    assert {"identity.merged", "identity.unmerged"} <= rules
