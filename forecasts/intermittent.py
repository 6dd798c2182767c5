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
AUTO_ETS = "auto_ets"
AUTO_ARIMA = "auto_arima"
ETS = "ets"
# the automatic models are fitted on the last AUTO_WINDOW_SEASONS seasons only: their model
# search grows with the history (AutoARIMA ~3 s, AutoETS ~2 s on 400 daily points here,
# ~0.2 s for AutoETS on 112) while a recent window is what they extrapolate from anyway
AUTO_WINDOW_SEASONS = 16


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


def _auto(model, y: np.ndarray, h: int, season: int, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    y = _clean(y)
    n_fit = min(len(y), AUTO_WINDOW_SEASONS * season)
    if n_fit < 2 * season + 2:
        return seasonal_naive(y, h, season)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of the ARIMA search
        r = model.forecast(y=y[-n_fit:], h=h, fitted=True)
    fitted = np.asarray(r["fitted"], dtype=float)
    fitted = np.concatenate([np.full(len(y) - n_fit, np.nan), fitted])
    fitted = np.where(np.isfinite(fitted), fitted, y).clip(min=0)  # no fit before the window: residual 0
    point = _clean(r["mean"]).clip(min=0)
    return point, fitted, name


def auto_ets(y: np.ndarray, h: int, season: int = 7) -> tuple[np.ndarray, np.ndarray, str]:
    """AutoETS (statsforecast: error, trend and season chosen by AICc) — a benchmark method
    and an ensemble member."""
    from statsforecast.models import AutoETS

    return _auto(AutoETS(season_length=season), y, h, season, AUTO_ETS)


def ets(y: np.ndarray, h: int, season: int = 7) -> tuple[np.ndarray, np.ndarray, str]:
    """ETS with additive season and no trend, its error type chosen by AICc (statsforecast
    AutoETS(model="ZNA")): the form AutoETS settles on for most daily demand series, at
    ~5 ms a fit instead of AutoETS's ~130 ms search over 30 forms (measured here on 112
    points) — an ensemble member the nightly run can afford."""
    from statsforecast.models import AutoETS

    return _auto(AutoETS(season_length=season, model="ZNA"), y, h, season, ETS)


def auto_arima(y: np.ndarray, h: int, season: int = 7) -> tuple[np.ndarray, np.ndarray, str]:
    """AutoARIMA (statsforecast, stepwise with the approximation) — a benchmark method."""
    from statsforecast.models import AutoARIMA

    return _auto(AutoARIMA(season_length=season, approximation=True), y, h, season, AUTO_ARIMA)


def warm_up() -> None:
    """Run each statsforecast model once on a tiny series: their numba functions compile
    on first call (~2 s per process here). See statsforecast_preload.py."""
    y = np.array([0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0])
    croston(y, 2)
    ses(y, 2)
    ets(np.tile(y + 1.0, 2), 2)  # the nightly blend's member (needs 2 seasons + 2 points)
