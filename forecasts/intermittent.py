"""Forecasts for series Prophet should not see: intermittent ones (Croston-type, from
statsforecast) and the fallbacks that guarantee every series a forecast.

Each function returns (point forecast for h periods, in-sample fitted values, method name);
the fitted values feed the residual quantiles the same way Prophet's do.
"""

from __future__ import annotations

import warnings

import numpy as np

CROSTON = "croston_optimized"
TSB_METHOD = "tsb"
SEASONAL_NAIVE = "seasonal_naive"
MEAN = "mean"
ZERO = "zero"
SES = "ses"


def _clean(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(a, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)


def croston(y: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, str]:
    """CrostonOptimized: separate SES on sizes and intervals, smoothing chosen by fit.
    A flat rate forecast — the right shape for sporadic demand."""
    from statsforecast.models import CrostonOptimized

    if not np.any(y > 0):
        return np.zeros(h), np.zeros(len(y)), ZERO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fitted values are expensive": 10 ms here
        r = CrostonOptimized().forecast(y=np.asarray(y, dtype=float), h=h, fitted=True)
    point = _clean(r["mean"]).clip(min=0)
    fitted = np.asarray(r["fitted"], dtype=float)
    fitted = np.where(np.isnan(fitted), np.nanmean(y), fitted).clip(min=0)
    if not np.all(np.isfinite(point)):
        raise ValueError("croston produced non-finite values")
    return point, fitted, CROSTON


def seasonal_naive(y: np.ndarray, h: int, season: int = 7) -> tuple[np.ndarray, np.ndarray, str]:
    """Repeat the last full season; mean when the history is shorter than one season;
    zeros when there is no history at all."""
    y = _clean(y)
    n = len(y)
    if n == 0:
        return np.zeros(h), np.zeros(0), ZERO
    if n < season:
        m = float(np.mean(y))
        return np.full(h, m), np.full(n, m), MEAN
    last = y[-season:]
    point = np.array([last[i % season] for i in range(h)], dtype=float)
    fitted = np.concatenate([np.full(season, np.mean(y[:season])), y[:-season]])
    return point, fitted, SEASONAL_NAIVE


def ses(y: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Simple exponential smoothing (statsforecast, alpha optimised) — a backtest baseline."""
    from statsforecast.models import SimpleExponentialSmoothingOptimized

    y = _clean(y)
    if len(y) < 2:
        m = float(np.mean(y)) if len(y) else 0.0
        return np.full(h, m), np.full(len(y), m), MEAN
    r = SimpleExponentialSmoothingOptimized().forecast(y=y, h=h, fitted=True)
    fitted = np.asarray(r["fitted"], dtype=float)
    fitted = np.where(np.isnan(fitted), y[0], fitted)
    return _clean(r["mean"]).clip(min=0), fitted.clip(min=0), SES


def warm_up() -> None:
    """Run each statsforecast model once on a tiny series: their numba functions compile
    on first call (~2 s per process here). See statsforecast_preload.py."""
    y = np.array([0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0])
    croston(y, 2)
    ses(y, 2)
