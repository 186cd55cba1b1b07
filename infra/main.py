"""Entry point of the `eventcrm` console script."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from rich.console import Console

from adapters.cli import DemoResult, Runtime, build_cli
from infra.bootstrap import (
    broker_of,
    configure_logging,
    database,
    default_sample,
    kafka_access,
    run_migrations,
    services,
)
from infra.clock import Clock, system_clock
from infra.errors import report
from infra.settings import (
    Settings,
    debug_requested,
    dotenv_names,
    load_settings,
    unknown_variables,
)


def main(argv: list[str] | None = None, *, clock: Clock = system_clock) -> None:
    """Run one command; any failure ends as one line on stderr and a documented exit
    code (docs/errors.md), with the traceback only under `--debug` / `EVENTCRM_DEBUG`.
    ``clock`` is the one clock of everything the command builds (ADR 0028)."""
    args = argv if argv is not None else sys.argv[1:]
    debug = debug_requested(os.environ)

    def on_debug(requested: bool) -> None:
        nonlocal debug
        debug = debug or requested

    try:
        _run(args, on_debug=on_debug, clock=clock)
    except SystemExit:
        raise
    except BrokenPipeError:
        # The reader went away (`eventcrm export | head`): stop quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except BaseException as exc:  # noqa: BLE001 - the one place every failure is reported
        sys.stdout.flush()
        sys.exit(report(exc, debug=debug, stream=sys.stderr))


def warn_unknown_variables(say: Callable[[str], None]) -> None:
    """Name each `EVENTCRM_*` variable (environment or `.env`) that no setting reads."""
    names = list(os.environ)
    env_file = Path(".env")
    if env_file.is_file():
        names += dotenv_names(env_file.read_text("utf-8", errors="replace"))
    for warning in unknown_variables(names):
        say(f"eventcrm: warning: {warning}")


def _run(args: list[str], *, on_debug: Callable[[bool], None], clock: Clock) -> None:
    warnings.filterwarnings("ignore", module="platformdirs")
    configure_logging()
    err = Console(stderr=True)
    warn_unknown_variables(lambda text: print(text, file=sys.stderr))
    # Read when a command needs them: `--help` and `schema` work whatever the settings.
    settings: Callable[[], Settings] = functools.cache(load_settings)

    def say(text: str) -> None:
        err.print(text, style="cyan", markup=False, soft_wrap=True)

    def open_runtime() -> AbstractContextManager[Runtime]:
        return services(settings(), say=say, clock=clock)

    def migrate() -> int:
        with database(settings(), say=say) as (admin_url, _, _):
            return run_migrations(settings(), admin_url)

    # The streaming stack (faust, aiokafka) is imported only by the commands that run
    # it: every other command, and the import's spawned workers, start ~0.5 s faster.
    def serve(roles: set[str], http: str) -> None:
        from infra.live import serve as run  # noqa: PLC0415
        from infra.serve import exit_if_threads_linger  # noqa: PLC0415

        run(settings(), roles, say=say, http=http, clock=clock)
        exit_if_threads_linger()

    def demo(customers: int, progress: Callable[[str, int, int], None]) -> DemoResult:
        from infra.live import streaming_demo  # noqa: PLC0415

        return streaming_demo(
            settings(), customers=customers, say=say, progress=progress, clock=clock
        )

    app = build_cli(
        open_runtime,
        open_kafka=lambda: kafka_access(settings()),
        migrate=migrate,
        serve=serve,
        demo=demo,
        sample=default_sample(),
        clock=clock,
        on_debug=on_debug,
        broker=lambda: broker_of(settings()),
    )
    app(args=args, prog_name="eventcrm")


if __name__ == "__main__":
    main()
