"""The churn model's fit: a logistic regression on piecewise-linear curves, by L-BFGS-B.

Each signal enters through a curve, linear between fixed knots and flat beyond them; the
log-odds of churn is an intercept plus the sum of the curves. Curves are learned as the
increments between knots (a hinge basis), so shape constraints are simple bounds on
those increments: a signal that must only ever raise risk (a complaint, time without a
purchase) gets non-negative increments. That is what lets the fold solve exactly when the
score will cross a level with no new event (the time curves never fall), and what keeps a
reason from contradicting common sense (a complaint never lowers the risk).

scipy's L-BFGS-B does bounded optimisation well; scikit-learn's logistic regression
cannot bound coefficients, and would be a large dependency for this one fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

Direction = Literal["up", "down", "free"]


@dataclass(frozen=True, slots=True)
class Term:
    """One signal's curve: its knots (natural units, increasing) and allowed shape."""

    name: str
    knots: tuple[float, ...]
    direction: Direction


@dataclass(frozen=True, slots=True)
class Fitted:
    """Log-odds = ``intercept + Σ curve(value)``, each curve given by its values at its
    knots (``values[0]`` is 0 before anchoring)."""

    intercept: float
    curves: Mapping[str, tuple[float, ...]]
    knots: Mapping[str, tuple[float, ...]]
    iterations: int
    converged: bool
    weights: tuple[float, ...] = ()
    """The raw solution (intercept, then each curve's increments): a warm start."""


def basis(values: NDArray[np.float64], knots: Sequence[float]) -> NDArray[np.float64]:
    """One column per segment between knots: how far along it the value is, 0 to 1."""
    k = np.asarray(knots, dtype=float)
    lows, widths = k[:-1], np.diff(k)
    segments: NDArray[np.float64] = np.clip(
        (values[:, None] - lows[None, :]) / widths[None, :], 0.0, 1.0
    )
    return segments


def design(
    columns: Mapping[str, NDArray[np.float64]], terms: Sequence[Term]
) -> NDArray[np.float64]:
    return np.hstack([basis(columns[term.name], term.knots) for term in terms])


def fit(
    columns: Mapping[str, NDArray[np.float64]],
    labels: NDArray[np.bool_],
    terms: Sequence[Term],
    *,
    l2: float = 1e-4,
    start: Sequence[float] = (),
) -> Fitted:
    """Maximum penalized likelihood; ``l2`` shrinks each increment toward a flat curve
    (signals without support in the data stay at zero). ``start``: a previous solution's
    ``weights`` to begin from (a path over ``l2`` converges much faster that way)."""
    x = design(columns, terms)
    y = labels.astype(float)
    n, k = x.shape
    bounds: list[tuple[float | None, float | None]] = [(None, None)]
    for term in terms:
        bound: tuple[float | None, float | None] = {
            "up": (0.0, None),
            "down": (None, 0.0),
            "free": (None, None),
        }[term.direction]
        bounds.extend([bound] * (len(term.knots) - 1))
    initial = np.zeros(k + 1)
    if len(start) == k + 1:
        initial[:] = start
    else:
        prior = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if n else 0.5
        initial[0] = np.log(prior / (1 - prior))

    def objective(w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        z = w[0] + x @ w[1:]
        p = 1.0 / (1.0 + np.exp(-z))
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z) / n + l2 * np.sum(w[1:] ** 2))
        residual = (p - y) / n
        grad = np.empty_like(w)
        grad[0] = residual.sum()
        grad[1:] = x.T @ residual + 2 * l2 * w[1:]
        return loss, grad

    result = minimize(
        objective, initial, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000}
    )
    w = result.x
    curves: dict[str, tuple[float, ...]] = {}
    at = 1
    for term in terms:
        steps = w[at : at + len(term.knots) - 1]
        at += len(term.knots) - 1
        curves[term.name] = (0.0, *(float(v) for v in np.cumsum(steps)))
    return Fitted(
        float(w[0]),
        curves,
        {t.name: t.knots for t in terms},
        int(result.nit),
        bool(result.success),
        tuple(float(v) for v in w),
    )


def log_loss(
    model: Fitted, columns: Mapping[str, NDArray[np.float64]], labels: NDArray[np.bool_]
) -> float:
    z = predict(model, columns)
    y = labels.astype(float)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(y) else float("nan")


def curve_at(
    value: NDArray[np.float64], knots: Sequence[float], logits: Sequence[float]
) -> NDArray[np.float64]:
    """The curve's log-odds at ``value`` (linear between knots, flat beyond)."""
    found: NDArray[np.float64] = np.interp(
        value, np.asarray(knots, dtype=float), np.asarray(logits, dtype=float)
    )
    return found


def predict(model: Fitted, columns: Mapping[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """Log-odds of churn for each row."""
    n = len(next(iter(columns.values())))
    z = np.full(n, model.intercept)
    for name, logits in model.curves.items():
        z += curve_at(columns[name], model.knots[name], logits)
    return z


def anchored(model: Fitted, references: Mapping[str, float]) -> Fitted:
    """The same model, each curve shifted to read 0 at its reference value (a typical
    customer) and the intercept taking up the difference: contributions then say how a
    customer differs from the typical one, and the intercept is the typical risk."""
    intercept = model.intercept
    curves = {}
    for name, logits in model.curves.items():
        shift = float(np.interp(references[name], model.knots[name], logits))
        curves[name] = tuple(v - shift for v in logits)
        intercept += shift
    return Fitted(intercept, curves, model.knots, model.iterations, model.converged)
