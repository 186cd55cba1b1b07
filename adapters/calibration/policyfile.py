"""Writing a calibrated policy: the base policy's text with the fitted churn model in it.

tomlkit edits the file in place, so the base policy's comments (the justification of every
tier, lifecycle and FX number) survive; only the churn curves, the alert levels, the
version and the training report change. The result is loaded back with the projections'
own strict loader before anyone sees it, so a calibrated policy is always a valid one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import tomlkit
from tomlkit.items import Table

from adapters.calibration.fit import Fitted
from adapters.calibration.levels import LevelFigures

_PLACES = Decimal("0.000001")


def _logit(value: float) -> str:
    return str(Decimal(repr(value)).quantize(_PLACES) + 0)  # + 0 turns -0.000000 into 0


def _number(value: float) -> str:
    text = format(Decimal(repr(value)).quantize(Decimal("0.0001")).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _points(steps: int) -> int | str:
    """Score steps (tenths) as the policy writes points: 62 or "62.5"."""
    whole, tenth = divmod(steps, 10)
    return whole if not tenth else f"{whole}.{tenth}"


def _plain(value: Any) -> Any:
    """The report as TOML values: floats rounded for reading, missing figures left out."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, Mapping):
        return {str(k): p for k, v in value.items() if (p := _plain(v)) is not None}
    if isinstance(value, list | tuple):
        return [p for v in value if (p := _plain(v)) is not None]
    return value


_REPORT_HEADER = (
    "\n# Written by `eventcrm calibrate`: how this policy's churn model was\n"
    "# fitted and judged (informative; the projections do not read it).\n"
)


def write_policy(
    base_text: str,
    model: Fitted,
    typical: Mapping[str, float],
    *,
    levels: Mapping[str, LevelFigures] | None,
    report: Mapping[str, Any],
    version: str,
) -> str:
    doc = tomlkit.parse(base_text.replace(_REPORT_HEADER, ""))
    doc["version"] = version
    churn = doc["churn"]
    assert isinstance(churn, Table)
    churn["intercept"] = _logit(model.intercept)
    signals = churn["signals"]
    assert isinstance(signals, Table)
    for name, logits in model.curves.items():
        table = signals[name]
        assert isinstance(table, Table)
        table["logit"] = tomlkit.item([_logit(v) for v in logits])
        table["typical"] = _number(typical[name])
    if levels is not None:
        table = churn["levels"]
        assert isinstance(table, Table)
        for name, figures in levels.items():
            table[name] = _points(figures.score)
        alert = doc["alert"]
        assert isinstance(alert, Table)
        margin = Decimal(str(alert["resolve_margin"])) * 10
        warning, watch = levels["warning"].score, levels["watch"].score
        if margin >= warning - watch:
            # auto-resolve no lower than the watch level: an open alert closes when the
            # customer is no longer at risk, and levels squeezed together keep the margin
            # inside the scale
            alert["resolve_margin"] = _points(max(1, warning - watch))
    if "calibration" in doc:
        del doc["calibration"]
    if report:
        body = tomlkit.dumps(doc).rstrip("\n")
        doc = tomlkit.parse(f"{body}\n{_REPORT_HEADER}")
        doc["calibration"] = _plain(dict(report))
    return tomlkit.dumps(doc)
