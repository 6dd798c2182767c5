"""One series in, one forecast out: choose the method by the series' class, fall back when
a fit fails, and attach calibrated quantiles. This is the unit of work the pool runs, the
nightly run uses and the backtest replays at each origin — one code path for all three.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from forecasts import intermittent
from forecasts.prophet_model import ProphetConfig, fit_predict_prophet
from forecasts.quantiles import (
    LEVELS,
    calibration_scale,
    make_quantiles,
    residual_offsets,
    standardized_residuals,
)
from forecasts.series import INTERMITTENT, SMOOTH, TOO_SHORT

PROPHET = "prophet"
# a stand-in for residuals when a series has too few: Poisson noise standardised by sqrt(level)
_NORMAL_Z = {0.1: -1.2816, 0.5: 0.0, 0.8: 0.8416, 0.9: 1.2816, 0.95: 1.6449}
MIN_RESIDUALS = 14
RESIDUAL_WINDOW = 365


@dataclass(frozen=True)
class SeriesTask:
    series_id: str
    ds: np.ndarray                 # history dates, oldest first (datetime64)
    y: np.ndarray                  # history values (≥ 0)
    future_ds: np.ndarray          # the dates to forecast
    kind: str = SMOOTH             # smooth / intermittent / too_short
    freq: str = "D"
    events: tuple[tuple[str, date, date], ...] = ()
    attendance_hist: np.ndarray | None = None
    attendance_future: np.ndarray | None = None
    method: str | None = None      # force one method (backtest baselines)
    calibrate: bool = True
    cal_horizon: int = 28
    prophet: ProphetConfig = field(default_factory=ProphetConfig)


@dataclass(frozen=True)
class SeriesForecast:
    series_id: str
    future_ds: np.ndarray
    method: str
    point: np.ndarray
    quantiles: np.ndarray          # (h, len(LEVELS))
    calibration_scale: float
    fallback_reason: str | None
    seconds: float


def season_length(freq: str) -> int:
    return 24 if freq.upper().startswith("H") else 7


def primary_method(kind: str) -> str:
    return {SMOOTH: PROPHET, INTERMITTENT: intermittent.CROSTON}.get(kind, intermittent.SEASONAL_NAIVE)


def _fit(method: str, task: SeriesTask, ds: np.ndarray, y: np.ndarray, future_ds: np.ndarray,
         att_hist: np.ndarray | None, att_future: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    h = len(future_ds)
    if method == PROPHET:
        if len(y) < 2 or not np.any(y > 0):
            raise ValueError("prophet needs at least two points and some demand")
        r = fit_predict_prophet(ds, y, future_ds, list(task.events), att_hist, att_future,
                                task.freq, task.prophet)
        return r.point, r.fitted, PROPHET
    if method == intermittent.CROSTON:
        return intermittent.croston(y, h)
    if method == intermittent.SES:
        return intermittent.ses(y, h)
    return intermittent.seasonal_naive(y, h, season_length(task.freq))


def forecast_series(task: SeriesTask) -> SeriesForecast:
    t0 = time.perf_counter()
    y = np.nan_to_num(np.asarray(task.y, dtype=float)).clip(min=0)
    ds = np.asarray(task.ds)
    fut = np.asarray(task.future_ds)
    h = len(fut)
    want = task.method or primary_method(task.kind)
    reason = None
    try:
        point, fitted, used = _fit(want, task, ds, y, fut, task.attendance_hist, task.attendance_future)
        if not np.all(np.isfinite(point)) or len(point) != h:
            raise ValueError(f"{want} returned {len(point)} values, non-finite={not np.all(np.isfinite(point))}")
    except Exception as exc:  # a failed fit must never leave a series out of the plan
        reason = f"{want}: {type(exc).__name__}: {str(exc)[:200]}"
        point, fitted, used = intermittent.seasonal_naive(y, h, season_length(task.freq))

    # calibration: refit on the history minus a holdout and measure out-of-sample errors
    scale = 1.0
    center = None
    n = len(y)
    cal_h = min(task.cal_horizon, n // 4)
    z_in = standardized_residuals(y[-RESIDUAL_WINDOW:], fitted[-RESIDUAL_WINDOW:])
    if used == intermittent.SEASONAL_NAIVE:
        z_in = z_in[season_length(task.freq):] if len(z_in) > 2 * season_length(task.freq) else z_in
    if task.calibrate and cal_h >= 7 and used not in (intermittent.ZERO, intermittent.MEAN):
        try:
            ah = task.attendance_hist
            p_out, _, _ = _fit(used, task, ds[:-cal_h], y[:-cal_h], ds[-cal_h:],
                               None if ah is None else ah[:-cal_h], None if ah is None else ah[-cal_h:])
            z_out = standardized_residuals(y[-cal_h:], p_out)
            scale = calibration_scale(z_in, z_out)
            # a shrunk re-centring: half-way to the holdout's median error (28 points are noisy)
            center = 0.5 * float(np.median(z_in)) + 0.5 * float(np.median(z_out)) if len(z_out) >= 7 else None
        except Exception:
            scale = 1.0
    if len(z_in) < MIN_RESIDUALS:
        offsets = np.array([_NORMAL_Z.get(q, 0.0) for q in LEVELS]) * scale
    else:
        offsets = residual_offsets(z_in, LEVELS, scale, center)
    q = make_quantiles(point, offsets)
    return SeriesForecast(
        series_id=task.series_id,
        future_ds=fut,
        method=used,
        point=np.round(np.maximum(point, 0.0), 6),
        quantiles=np.round(q, 6),
        calibration_scale=round(scale, 6),
        fallback_reason=reason,
        seconds=time.perf_counter() - t0,
    )
