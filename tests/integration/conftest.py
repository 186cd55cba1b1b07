"""Fixtures shared by integration modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.crypto import MasterKey
from adapters.store import CustomerStore
from infra.bootstrap import build_store
from infra.broker import embedded_broker
from tests.conftest import TEST_MASTER_KEY, scratch_database, settings_for
from tests.integration.alerting import AlertingRun, run_alerting_pipeline


@pytest.fixture(scope="session")
def alerting(pg_admin_url: str) -> Iterator[AlertingRun]:
    """One pipeline run that raised alerts, on a broker of its own, for every test that
    reads what the pipeline publishes (the webhooks, the outbound contract)."""
    stores: list[CustomerStore] = []

    def make_store(url: str, **overrides: object) -> CustomerStore:
        settings = settings_for(url, **overrides)
        store = build_store(
            settings, url, MasterKey.from_text(TEST_MASTER_KEY), as_role=settings.app_role
        )
        stores.append(store)
        return store

    with embedded_broker() as broker, scratch_database(pg_admin_url) as url:
        try:
            yield run_alerting_pipeline(broker.bootstrap, url, make_store, customers=50, seed=31)
        finally:
            for store in stores:
                store.close()
