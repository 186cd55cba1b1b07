"""`eventcrm calibrate` and `eventcrm backtest`: how ops fit a churn model and decide to
switch policies. The work is in :mod:`adapters.calibration`; this module reads the store,
the files and the options, and prints."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.table import Table

from adapters.readside import ProjectionReader
from domain.errors import UsageError
from projections import InputEvent, Policy, PolicyError, load_policy


class ChurnRuntime(Protocol):
    @property
    def reader(self) -> ProjectionReader: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def policy_text(self) -> str: ...


def histories(reader: ProjectionReader) -> Iterator[tuple[str, list[InputEvent]]]:
    """Every customer's projection inputs, as the calibration and backtest read them."""
    for history in reader.histories():
        yield history.customer_id, history.events


def read_policy(path: Path, option: str) -> tuple[str, Policy]:
    """A policy file named on the command line; unreadable or invalid is a usage error."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(
            f"cannot read the policy file {option} {path}: {reason}",
            code="file_error",
            hint="name a readable TOML policy file",
        ) from None
    try:
        return text, load_policy(text)
    except PolicyError as exc:
        raise UsageError(
            f"the policy file {option} {path} is invalid: {exc}",
            code="invalid_policy",
            hint="fix that key (projections/default_policy.toml documents each)",
        ) from None


def _share(value: float | None, option: str) -> float | None:
    if value is not None and not 0 < value <= 1:
        raise UsageError(
            f"{option} must be a share between 0 and 1, got {value}", code="invalid_option"
        )
    return value


def add_churn_commands(
    app: typer.Typer,
    open_runtime: Callable[[], AbstractContextManager[ChurnRuntime]],
    *,
    parse_instant: Callable[[str], datetime],
    print_json: Callable[[object], None],
    err: Console,
) -> None:
    @app.command("calibrate")
    def calibrate_command(
        as_of: Annotated[
            str | None,
            typer.Option("--as-of", help="fit on history up to this instant (default now)"),
        ] = None,
        horizon_days: Annotated[
            int,
            typer.Option(
                "--horizon-days", min=7, max=730, help="churn = no purchase or renewal within this"
            ),
        ] = 90,
        out: Annotated[
            Path | None, typer.Option("--out", help="write the new policy here (default stdout)")
        ] = None,
        warning_share: Annotated[
            float | None,
            typer.Option(
                "--warning-share",
                help="alert budget: at most this share of active customers at warning or above",
            ),
        ] = 0.10,
        critical_share: Annotated[
            float | None, typer.Option("--critical-share", help="at most this share at critical")
        ] = 0.03,
        watch_share: Annotated[
            float | None, typer.Option("--watch-share", help="at most this share at watch or above")
        ] = 0.25,
        target_precision: Annotated[
            float | None,
            typer.Option(
                "--target-precision",
                help="customers at warning or above must churn at least this often",
            ),
        ] = None,
        step_days: Annotated[
            int, typer.Option("--step-days", min=7, help="days between cutoffs")
        ] = 30,
        cutoffs: Annotated[
            int, typer.Option("--cutoffs", min=2, max=36, help="at most this many cutoffs")
        ] = 8,
        version: Annotated[
            str | None, typer.Option("--version", help="the new policy's version")
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="print the training report as JSON")
        ] = False,
    ) -> None:
        """Fit the churn model and its alert levels on the store's own history, and write
        them as a new policy file (the configured policy's other settings are kept)."""
        from adapters.calibration import (  # noqa: PLC0415 - scipy costs every command ~1 s
            CalibrationError,
            CalibrationOptions,
            LevelError,
            LevelRule,
            calibrate,
        )

        options = CalibrationOptions(
            horizon_days=horizon_days,
            step_days=step_days,
            max_cutoffs=cutoffs,
            version=version,
            levels=LevelRule(
                watch=_share(watch_share, "--watch-share"),
                warning=_share(warning_share, "--warning-share"),
                critical=_share(critical_share, "--critical-share"),
                target_precision=_share(target_precision, "--target-precision"),
            ),
        )
        with open_runtime() as runtime:
            instant = parse_instant(as_of) if as_of else runtime.clock()
            try:
                result = calibrate(
                    histories(runtime.reader), runtime.reader.policy, runtime.policy_text,
                    as_of=instant, options=options,
                )  # fmt: skip
            except (CalibrationError, LevelError) as exc:
                raise UsageError(
                    str(exc), code="cannot_calibrate",
                    hint="see docs/churn-model.md for what a calibration needs",
                ) from None  # fmt: skip
        if out is not None:
            try:
                out.write_text(result.policy_text, "utf-8")
            except OSError as exc:
                raise UsageError(
                    f"cannot write {out}: {exc.strerror}", code="file_error",
                    hint="name a writable file for --out",
                ) from None  # fmt: skip
        else:
            sys.stdout.write(result.policy_text)
        if as_json:
            (print_json if out is not None else _stderr_json(err))(result.report)
        else:
            _print_report(err, result.report, result.policy.version, out)

    @app.command("backtest")
    def backtest_command(
        policy: Annotated[
            Path | None,
            typer.Option("--policy", help="the policy to judge (default: the configured one)"),
        ] = None,
        against: Annotated[
            Path | None, typer.Option("--against", help="a second policy, replayed in shadow")
        ] = None,
        start: Annotated[
            str | None, typer.Option("--from", help="window start (default: a year before --to)")
        ] = None,
        end: Annotated[str | None, typer.Option("--to", help="window end (default now)")] = None,
        horizon_days: Annotated[int, typer.Option("--horizon-days", min=7, max=730)] = 90,
        sample: Annotated[
            int, typer.Option("--sample", min=0, help="differing customers shown")
        ] = 10,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ) -> None:
        """Replay history under a policy (and another in shadow): alerts it would have
        raised, their precision and recall, AUC of the score, lead time, distributions."""
        from adapters.calibration.backtest import (  # noqa: PLC0415 - as calibrate's
            BacktestWindow,
            backtest,
        )

        chosen = read_policy(policy, "--policy")[1] if policy is not None else None
        shadow = read_policy(against, "--against")[1] if against is not None else None
        with open_runtime() as runtime:
            until = parse_instant(end) if end else runtime.clock()
            since = parse_instant(start) if start else until - timedelta(days=365)
            if since >= until:
                raise UsageError("--from must be before --to", code="invalid_option")
            window = BacktestWindow(since, until, horizon_days=horizon_days, sample=sample)
            result = backtest(
                histories(runtime.reader), chosen or runtime.reader.policy, window, against=shadow
            )
        if as_json:
            print_json(result)
        else:
            _print_backtest(result)


def _stderr_json(err: Console) -> Callable[[object], None]:
    def show(value: object) -> None:
        err.print_json(data=value, default=str)

    return show


def _figure(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_report(err: Console, report: dict[str, Any], version: str, out: Path | None) -> None:
    held = report["held_out"]
    err.print(
        f"policy {version}: {report['customers']} customers, "
        f"{report['training_rows']} training snapshots over {len(report['cutoffs']) - 1} cutoffs, "
        f"held out {report['held_out_cutoff'][:10]} ({report['held_out_rows']} snapshots)"
    )
    table = Table(title="held-out cutoff: ranking of churn within the horizon")
    table.add_column("ranking")
    table.add_column("ROC-AUC", justify="right")
    table.add_row("calibrated score", _figure(held["auc"]))
    table.add_row(
        f"policy it replaces ({held['previous_policy_version']})",
        _figure(held["previous_policy_auc"]),
    )
    table.add_row("days since last purchase", _figure(held["days_since_auc"]))
    table.add_row("RFM quintiles", _figure(held["rfm_auc"]))
    err.print(table)
    err.print(
        f"average precision {_figure(held['average_precision'])}, Brier {_figure(held['brier'])}"
    )
    levels = Table(
        title="alert levels (share of active customers now; precision at the held-out cutoff)"
    )
    for column in ("level", "score", "share", "customers", "precision", "recall"):
        levels.add_column(column, justify="right")
    for name, figures in report["levels"].items():
        levels.add_row(
            name, _figure(figures["score"], 1), _figure(figures["share_of_active"]),
            str(figures["customers"]), _figure(figures["precision"]), _figure(figures["recall"]),
        )  # fmt: skip
    err.print(levels)
    if out is not None:
        err.print(
            f"wrote {out}; check it with `eventcrm backtest --policy {out}`, "
            f"then use it with EVENTCRM_POLICY={out}"
        )


def _print_backtest(result: dict[str, Any]) -> None:
    console = Console()
    sides = [("policy", result["policy"])] + (
        [("against", result["against"])] if "against" in result else []
    )
    table = Table(
        title=f"backtest {result['from'][:10]} → {result['to'][:10]}, "
        f"{result['customers']} customers, churn = no purchase or renewal within "
        f"{result['horizon_days']} days"
    )
    table.add_column("")
    for name, side in sides:
        table.add_column(f"{name} {side['version']}", justify="right")
    rows = (
        ("alerts raised", "alerts", 0), ("precision", "precision", 3), ("recall", "recall", 3),
        ("ROC-AUC of the score", "auc", 3), ("average precision", "average_precision", 3),
        ("median lead time, days", "median_lead_days", 1),
    )  # fmt: skip
    for label, key, digits in rows:
        table.add_row(label, *(_figure(side[key], digits) for _, side in sides))
    for label, key in (("tiers", "tiers"), ("stages", "stages"), ("churn levels", "churn_levels")):
        table.add_row(
            label, *(", ".join(f"{k} {v}" for k, v in side[key].items()) for _, side in sides)
        )
    console.print(table)
    if "differing_customers" in result:
        console.print(
            f"{result['differing_customers']} customers differ in tier, stage or alert at the end"
        )
        for item in result["differences"]:
            mine, theirs = item["policy"], item["against"]
            console.print(
                f"  {item['customer_id']}: {mine['tier']}/{mine['stage']}/{mine['alert_state']} "
                f"score {mine['churn_score']} vs {theirs['tier']}/{theirs['stage']}/"
                f"{theirs['alert_state']} score {theirs['churn_score']}; top reasons: "
                + "; ".join(f"{r['rule']} {r['points']}" for r in theirs["reasons"][:3])
            )
