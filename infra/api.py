"""The `api` role: the HTTP app wired from the composition root, served by uvicorn."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from adapters.crypto import MasterKey
from adapters.http import ApiContext, Limits, build_app
from infra.bootstrap import Root, Services

log = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this (uvicorn's `timeout_keep_alive`)."""
MAX_CONNECTIONS = 200
"""Connections served at once; more get 503 at once (uvicorn's `limit_concurrency`)."""


def broker_probe(bootstrap: str, *, timeout: float = 2.0) -> Callable[[], bool]:
    """Whether any bootstrap server accepts a TCP connection (what `/readyz` asks)."""
    servers = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        if host and port.isdigit():
            servers.append((host.strip("[]"), int(port)))

    def reachable() -> bool:
        for address in servers:
            try:
                socket.create_connection(address, timeout=timeout).close()
            except OSError:
                continue
            return True
        return False

    return reachable


def api_context(
    services: Services, *, broker: str | None, master_key: MasterKey | None = None
) -> ApiContext:
    settings = services.settings
    return ApiContext(
        store=services.store,
        reader=services.reader,
        read_models=services.read_models,
        tokens=services.tokens,
        stats=services.stats,
        clock=services.clock,
        limits=Limits(
            max_body_bytes=settings.http_max_body_bytes,
            max_batch=settings.http_max_batch,
            ready_max_projector_lag=settings.http_ready_max_projector_lag,
        ),
        broker_reachable=broker_probe(broker) if broker else None,
        master_key=master_key,
    )


def admin_routers() -> Sequence[APIRouter]:
    """Routers added to the API at wiring time, beyond the built-in ones."""
    return ()


@contextlib.contextmanager
def http_app(root: Root, *, broker: str | None) -> Iterator[FastAPI]:
    """The app of one API process, with its services (on the root's clock); closed on
    exit."""
    with root.services(pool_size=root.settings.http_pool_size) as services:
        yield build_app(
            api_context(services, broker=broker, master_key=root.master_key),
            routers=admin_routers(),
        )


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def uvicorn_server(app: FastAPI, address: str) -> uvicorn.Server:
    host, port = split_address(address)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=10,
        lifespan="off",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve_api(
    root: Root,
    stop: threading.Event,
    *,
    address: str,
    broker: str | None,
    on_listening: Callable[[str], None] = lambda where: None,
) -> None:
    """Serve the API at ``address`` until ``stop`` is set."""
    with http_app(root, broker=broker) as app:
        server = uvicorn_server(app, address)
        thread = threading.Thread(target=server.run, name="eventcrm-api", daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            stop.wait(0.05)
        if server.started:
            sockets = [s for srv in server.servers for s in srv.sockets]
            host, port = sockets[0].getsockname()[:2]
            on_listening(f"http://{host}:{port}")
        while thread.is_alive() and not stop.wait(0.2):
            pass
        server.should_exit = True
        thread.join(15)
        if not stop.is_set():
            raise RuntimeError(f"the HTTP server on {address} stopped (is the port in use?)")
