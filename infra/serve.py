"""`eventcrm serve`: the pipeline roles in one process, each supervised in a thread.

Roles: ``ingest`` (Kafka `interactions` → the store), ``relay`` (the store's outbox →
`customer-events` and the DLQ topic), ``project`` (the faust app of `streams.app`,
run in-process with asyncio in its thread, as docs/streams-notes.md measured),
``webhooks`` (`churn-alerts` → the webhook outbox → signed POSTs; ADR 0023).

Each life of a role gets its own clients (store pool, Kafka consumer or producer) from
the composition root (`infra.bootstrap.Root`, on the process's one clock) and closes
them when it ends, so the supervisor restarts a crashed role with fresh ones: a
permanently failed idempotent producer is replaced, never reused (RELIABILITY G5,
G12). Topics are provisioned before any client touches them, since the embedded broker
would otherwise auto-create them with 4 partitions.

Kafka is disposable. A watcher polls the topics' ids (`adapters.topics.TopicWatch`);
when the broker lost its data it re-provisions the topics (replacing any rebuilt topic
a client re-created meanwhile with the broker's default partition count) and restarts
every role on the new incarnation: the ingest reads the re-created `interactions` from
offset 0 under fresh position names, the relay re-publishes from the first event a
projector still needs, and the projector joins a consumer group named after the
incarnation, so offsets an old client committed into the new broker are never read.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from kafka.partitioner.default import murmur2

from adapters.reannounce import IncarnationLog
from adapters.relay import RelayLockedError
from adapters.retry import (
    PROJECTOR_BATCH,
    ROLE_RESTART,
    STORE_UNAVAILABLE,
    WEBHOOK_DELIVERY,
    RetryPolicy,
)
from adapters.topics import TopicWatch, ensure_topics, incarnation_of
from infra.bootstrap import Root, configure_logging
from infra.clock import system_clock
from infra.settings import Settings
from streams.app import build_app

log = logging.getLogger(__name__)

ROLES: Final = frozenset({"ingest", "relay", "project", "webhooks"})


class RoleEndedError(RuntimeError):
    """A role returned although its life had not ended: it is restarted like a crash."""


@dataclass(frozen=True, slots=True)
class Tuning:
    """Timing knobs; the defaults suit local runs on the embedded broker, tests use
    `Tuning.fast()` (docs/streams-notes.md: a group join takes half the session)."""

    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    restart_pause: float = 1.0
    """Pause before restarting a role that died (and between standby relay attempts)."""
    tick_interval: float = 1.0
    watch_interval: float = 1.0
    """How often the topics' ids are checked for a broker that lost its data."""
    group_prefix: str = "eventcrm"
    webhook_retry: RetryPolicy = WEBHOOK_DELIVERY
    """Backoff of failing webhook endpoints, and after how many failures one is dead."""
    webhook_timeout: float = 10.0
    """Seconds a webhook receiver has to answer one delivery."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Tuning:
        session = settings.kafka_session_timeout_seconds
        return cls(session_timeout=session, heartbeat_interval=session / 4)

    @classmethod
    def fast(cls, **overrides: Any) -> Tuning:
        fast = cls(
            session_timeout=2.0,
            heartbeat_interval=0.5,
            restart_pause=0.5,
            watch_interval=0.5,
            webhook_retry=replace(WEBHOOK_DELIVERY, first_wait=0.1, max_wait=1.0),
            webhook_timeout=2.0,
        )
        return replace(fast, **overrides)


class Life(threading.Event):
    """One life of a role: ends when the pipeline stops or when the role must restart
    (a broker reset). Roles take it as their ``stop`` event."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def is_set(self) -> bool:
        return super().is_set() or self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.1 if end is None else min(0.1, end - time.monotonic())
            if left <= 0:
                break
            super().wait(left)
        return self.is_set()


def partition_of(key: bytes, partitions: int) -> int:
    """kafka-python's default partitioner (the relay's): murmur2 of the key."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


STOP_TIMEOUT: Final = 40.0
"""Seconds a role process has to stop cleanly after SIGTERM."""

PROJECT_STOP_GRACE: Final = 25.0
"""Seconds the projector's event loop has to stop once its life ended (faust's own
stop is bounded at 15 s inside it)."""


def exit_if_threads_linger(grace: float = 5.0) -> None:
    """End the process if threads that would keep it alive remain after ``grace``
    seconds: an abandoned faust app leaves a non-daemon worker thread behind, and a
    stopped `serve` must leave nothing running."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    me = threading.current_thread()
    lingering = [t.name for t in threading.enumerate() if t is not me and not t.daemon]
    if lingering:
        log.error("threads %s did not stop; exiting anyway", lingering)
        logging.shutdown()
        os._exit(0)


def _check(roles: set[str]) -> None:
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")


def run_roles(
    root: Root,
    roles: set[str],
    stop: threading.Event,
    *,
    bootstrap: str,
    tuning: Tuning | None = None,
) -> None:
    """Provision the topics, run ``roles`` (built by ``root``, on its clock) until
    ``stop`` is set, then wait for them."""
    _check(roles)
    Pipeline(root, bootstrap=bootstrap, tuning=tuning or Tuning()).run(roles, stop)


def run_role_processes(
    root: Root,
    roles: set[str],
    stop: threading.Event,
    *,
    bootstrap: str,
    tuning: Tuning | None = None,
) -> None:
    """`run_roles`, one spawned process per role, until ``stop``; a role process that
    dies is started again. Then SIGTERM to each, and SIGKILL to any still running
    after `STOP_TIMEOUT`.

    The roles are CPU-bound Python: in one interpreter they share one core through the
    GIL; as processes they use every core (docs/benchmarks.md has the measured gain).
    Each process is handed ``root``, so it must run on the system clock (a test's clock
    would not reach another process).
    """
    _check(roles)
    tuning = tuning or Tuning()
    if root.clock is not system_clock:
        raise ValueError("role processes run on the system clock")
    topics = root.topics()
    ensure_topics(bootstrap, topics.all(), partitions=topics.partitions())
    spawn = multiprocessing.get_context("spawn")
    launch = _Launch(root, bootstrap, tuning)

    def start(role: str) -> multiprocessing.process.BaseProcess:
        process = spawn.Process(target=_role_process, args=(role, launch), name=f"eventcrm-{role}")
        process.start()
        return process

    processes = {role: start(role) for role in sorted(roles)}
    try:
        while not stop.wait(tuning.restart_pause):
            for role, process in processes.items():
                if not process.is_alive():
                    log.error("role process %s exited (%s); restarting", role, process.exitcode)
                    processes[role] = start(role)
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("role process %s did not stop; killing it", process.name)
                process.kill()
                process.join()


@dataclass(frozen=True)
class _Launch:
    """What a role process gets (pickled by multiprocessing's spawn)."""

    root: Root
    bootstrap: str
    tuning: Tuning


def _role_process(role: str, launch: _Launch) -> None:
    configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_roles(launch.root, {role}, stop, bootstrap=launch.bootstrap, tuning=launch.tuning)
    exit_if_threads_linger()


class Pipeline:
    """The roles and their supervisor."""

    def __init__(self, root: Root, *, bootstrap: str, tuning: Tuning) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.tuning = tuning
        self.topics = root.topics()
        self.topic_ids: dict[str, str | None] = {}
        self._lives: dict[str, Life] = {}
        self._lives_lock = threading.Lock()

    def incarnation(self, topic: str) -> str:
        return incarnation_of(self.topic_ids.get(topic))

    def run(self, roles: set[str], stop: threading.Event) -> None:
        watch = TopicWatch(self.bootstrap, self.topics.all())
        try:
            self._provision(watch)
            self._run(roles, stop, watch)
        finally:
            watch.close()

    def _provision(self, watch: TopicWatch) -> None:
        store = self.root.role_store()
        try:
            incarnations = IncarnationLog(store.datastore)
            logged = incarnations.logged(self.topics.rebuilt())

            def replaceable(topic: str, topic_id: str) -> bool:
                # An incarnation nobody logged of a topic provisioned before: a client
                # re-created it after a wipe, with the broker's default partition count;
                # its content is published again on its replacement (ADR 11).
                tag, seen = incarnation_of(topic_id), logged.get(topic, set())
                return bool(tag and seen) and tag not in seen

            ensure_topics(
                self.bootstrap,
                self.topics.all(),
                partitions=self.topics.partitions(),
                replace=replaceable,
            )
            self.topic_ids = watch.ids()
            # Logged before any role of this process uses them: after a wipe, the relay
            # re-announces what changed since the lost incarnations were first seen.
            incarnations.adopt({topic: self.incarnation(topic) for topic in self.topic_ids})
        finally:
            store.close()

    def _run(self, roles: set[str], stop: threading.Event, watch: TopicWatch) -> None:
        targets: dict[str, Callable[[threading.Event], None]] = {
            "ingest": self.ingest,
            "relay": self.relay,
            "project": self.project,
            "webhooks": self.webhooks,
        }
        threads = [
            threading.Thread(
                target=self.supervise,
                args=(name, targets[name], stop),
                name=f"eventcrm-{name}",
                daemon=True,
            )
            for name in sorted(roles)
        ]
        for thread in threads:
            thread.start()
        while not stop.wait(self.tuning.watch_interval):
            self.watch(watch)
        for thread in threads:
            thread.join()

    def watch(self, watch: TopicWatch) -> bool:
        """One check of the topics' ids; on a change, re-provision and restart every
        role. Returns whether the broker was found reset."""
        try:
            ids = watch.ids()
        except Exception as exc:  # noqa: BLE001 - the broker may be down: ask again later
            log.debug("watch: cannot describe topics: %s", exc)
            return False
        if ids == self.topic_ids:
            return False
        changed = sorted(name for name in ids if ids[name] != self.topic_ids.get(name))
        log.warning("the broker lost topics %s (new or missing ids): re-provisioning", changed)
        try:
            self._provision(watch)
        except Exception:
            log.exception("watch: re-provisioning failed; trying again")
            return False
        with self._lives_lock:
            lives = list(self._lives.values())
        for life in lives:
            life.set()
        return True

    def supervise(
        self, name: str, target: Callable[[threading.Event], None], stop: threading.Event
    ) -> None:
        """Run ``target`` until ``stop``; restart it after a pause if it dies (G12), and
        at once when the watcher ends its life (a broker reset)."""
        policy = ROLE_RESTART.starting_at(self.tuning.restart_pause)
        restarts = policy.retrying(f"role {name}", on=Exception, until=stop)
        while not stop.is_set():
            try:
                restarts(lambda: self._live(name, target, stop))
            except Exception:
                if not stop.is_set():
                    raise

    def _live(
        self, name: str, target: Callable[[threading.Event], None], stop: threading.Event
    ) -> None:
        """One life of a role: returns when the pipeline stops or a broker reset ended
        it (restart at once); raises when it died or returned by itself (restart after
        a pause)."""
        life = Life(stop)
        with self._lives_lock:
            self._lives[name] = life
        try:
            target(life)
        except Exception:
            if not life.is_set():
                raise
        else:
            if not life.is_set():
                raise RoleEndedError(f"role {name} returned early")
        if not stop.is_set():
            log.warning("role %s restarts on the new topic incarnations", name)

    def group(self, role: str, incarnation: str) -> str:
        """A consumer group per topic incarnation: offsets a client of the old broker
        commits into the new one after a reset land in a group nobody reads."""
        suffix = f"-{incarnation}" if incarnation else ""  # UUIDv7: the prefix is a time
        return f"{self.tuning.group_prefix}-{role}{suffix}"

    # --- roles: their services come from the root; their loops are here -------------

    def ingest(self, stop: threading.Event) -> None:
        incarnation = self.incarnation(self.topics.interactions)
        with self.root.ingest(
            self.bootstrap,
            group=self.group("ingest", incarnation),
            incarnation=incarnation,
            session_timeout=self.tuning.session_timeout,
            retry=STORE_UNAVAILABLE.starting_at(self.tuning.restart_pause),
        ) as ingest:
            ingest.run(stop)

    def relay(self, stop: threading.Event) -> None:
        with self.root.relay(self.bootstrap, incarnation=self.incarnation) as role:
            checkpoints = self._checkpoints(role.checkpoints, stop)
            while not stop.is_set():
                try:
                    role.relay.run(stop)
                except RelayLockedError:
                    log.debug("relay: another relay is active; standing by")
                    stop.wait(self.tuning.restart_pause)
            if checkpoints is not None:
                checkpoints.join(timeout=30)

    def webhooks(self, stop: threading.Event) -> None:
        """Feed the webhook outbox from `churn-alerts` and deliver it (ADR 0023)."""
        with self.root.webhooks(
            self.bootstrap,
            incarnation=self.incarnation(self.topics.churn_alerts),
            retry=self.tuning.webhook_retry,
            timeout=self.tuning.webhook_timeout,
        ) as role:
            while not stop.is_set():
                if not role.run(stop):
                    log.debug("webhooks: another deliverer is active; standing by")
                    stop.wait(self.tuning.restart_pause)

    def _checkpoints(
        self, step: Callable[[threading.Event], None] | None, stop: threading.Event
    ) -> threading.Thread | None:
        """The periodic checkpoint step (docs/verify.md), beside the relay."""
        if step is None:
            return None
        thread = threading.Thread(
            target=step, args=(stop,), name="eventcrm-checkpoints", daemon=True
        )
        thread.start()
        return thread

    def project(self, stop: threading.Event) -> None:
        """The faust app, on an event loop in a thread of its own. faust cannot always
        stop: after the broker lost its data its consumer may wait on a coordinator
        that no longer exists (observed: >60 s, once forever). So once this life has
        ended, the loop gets `PROJECT_STOP_GRACE` seconds; after that it is abandoned
        (its consumer group is the old incarnation's, its writes are forward-only) and
        the supervisor starts a fresh app. The life also ends when the app ended by
        itself (it crashed), not when ``asyncio.run`` returns: after a crash it still
        closes the app's resources, cancels the loop's tasks and waits for its worker
        threads, any of which may not end (a role that waited for it stalled for good
        after a PostgreSQL restart)."""
        errors: list[BaseException] = []
        ended = threading.Event()

        async def main() -> None:
            try:
                await self._project(stop, ended)
            except Exception as exc:  # noqa: BLE001 - handed to the role's thread
                errors.append(exc)
            finally:
                ended.set()

        def loop() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - handed to the role's thread
                errors.append(exc)
            finally:
                ended.set()

        runner = threading.Thread(target=loop, name="eventcrm-project-loop", daemon=True)
        runner.start()
        while not ended.is_set() and not stop.is_set():
            ended.wait(0.5)
        runner.join(PROJECT_STOP_GRACE)
        if runner.is_alive():
            log.error(
                "projector: its event loop did not stop within %.0f s; abandoned",
                PROJECT_STOP_GRACE,
            )
            if stop.is_set():
                return
        if errors:
            raise errors[0]

    async def _project(self, stop: threading.Event, ended: threading.Event) -> None:
        """Serve the faust app until ``stop``; ``ended`` is set as soon as it stopped
        serving (then its resources are closed, which might not end)."""
        with (
            self.root.projector(self.bootstrap) as parts,
            tempfile.TemporaryDirectory(prefix="eventcrm-faust-") as scratch,
        ):
            batches = PROJECTOR_BATCH.starting_at(self.tuning.restart_pause)
            served = build_app(
                app_id=self.group("projector", self.incarnation(self.topics.customer_events)),
                bootstrap=self.bootstrap,
                topics=self.topics,
                projector_factory=parts.projector,
                publish_changes=parts.publish_changes,
                due=parts.due,
                partition_of=partition_of,
                tick_interval=self.tuning.tick_interval,
                session_timeout=self.tuning.session_timeout,
                heartbeat_interval=self.tuning.heartbeat_interval,
                retry=lambda attempt, stopping: batches.call_async(
                    "projector: a batch or tick", attempt, until=stopping
                ),
                clock=parts.clock,
                datadir=scratch,
            )
            try:
                await served.run(stop)
            finally:
                ended.set()
