"""Entry point of the `eventcrm` console script."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager

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
from infra.settings import Settings


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", module="platformdirs")
    configure_logging()
    settings = Settings()
    err = Console(stderr=True)

    def open_runtime() -> AbstractContextManager[Runtime]:
        return services(settings, say=lambda text: err.print(f"[cyan]{text}[/cyan]"))

    def migrate() -> int:
        with database(settings) as (admin_url, _, _):
            return run_migrations(settings, admin_url)

    def say(text: str) -> None:
        err.print(f"[cyan]{text}[/cyan]")

    # The streaming stack (faust, aiokafka) is imported only by the commands that run
    # it: every other command, and the import's spawned workers, start ~0.5 s faster.
    def serve(roles: set[str]) -> None:
        from infra.live import serve as run  # noqa: PLC0415
        from infra.serve import exit_if_threads_linger  # noqa: PLC0415

        run(settings, roles, say=say)
        exit_if_threads_linger()

    def demo(customers: int, progress: Callable[[str, int, int], None]) -> DemoResult:
        from infra.live import streaming_demo  # noqa: PLC0415

        return streaming_demo(settings, customers=customers, say=say, progress=progress)

    app = build_cli(
        open_runtime,
        open_kafka=lambda: kafka_access(settings),
        migrate=migrate,
        serve=serve,
        demo=demo,
        sample=default_sample(),
        broker=lambda: broker_of(settings),
    )
    app(args=argv if argv is not None else sys.argv[1:], prog_name="eventcrm")


if __name__ == "__main__":
    main()
