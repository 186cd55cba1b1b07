"""A real API server for tests: a migrated database seeded with simulated customers,
read models rebuilt, one token per role, uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.crypto import MasterKey
from adapters.http import build_app
from adapters.readmodels import rebuild
from adapters.simulate import simulate
from adapters.tokens import ROLES
from infra.api import api_context, uvicorn_server
from infra.bootstrap import Services, wired
from infra.settings import Settings
from tests.conftest import settings_for


@dataclass
class RunningApi:
    url: str
    tokens: dict[str, str]
    """One token per role, named after the role (``ops`` → token named "ops-user")."""
    services: Services

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def open_alert(self) -> tuple[str, str]:
        """(alert id, customer id) of the most at-risk open alert."""
        rows = self.services.read_models.alerts(state="open", limit=1)
        assert rows, "the seeded population has an open alert"
        return str(rows[0].alert_id), rows[0].customer_id


def seed(services: Services, *, customers: int, seed_value: int = 7) -> None:
    now = services.clock()
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    items = simulate(customers=customers, seed=seed_value, end=end, days=300).interactions
    for start in range(0, len(items), 2000):
        services.store.record(items[start : start + 2000])
    rebuild(services.read_models, services.store, services.reader.policy, as_of=now)


@contextlib.contextmanager
def running_api(
    url: str, *, customers: int = 40, settings: Settings | None = None
) -> Iterator[RunningApi]:
    settings = settings or settings_for(url)
    assert settings.master_key is not None
    key = MasterKey.from_text(settings.master_key)
    with wired(settings, url, key, as_role=settings.app_role, pool_size=6) as services:
        if customers:
            seed(services, customers=customers)
        tokens = {role: services.tokens.create(name=f"{role}-user", role=role) for role in ROLES}
        app = build_app(api_context(services, broker=None, master_key=key))
        server = uvicorn_server(app, "127.0.0.1:0")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the server failed to start"
            threading.Event().wait(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield RunningApi(f"http://127.0.0.1:{port}", tokens, services)
        finally:
            server.should_exit = True
            thread.join(15)


def now_utc() -> datetime:
    return datetime.now(UTC)
