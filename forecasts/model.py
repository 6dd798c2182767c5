"""One series in, one forecast out: choose the method by the series' class, fall back when
a fit fails, and attach quantiles (calibrated with the backtest-learned table in
`task.calibration`, calibration.py; no per-series refit). This is the unit of work the pool runs, the
nightly run uses and the backtest replays at each origin — one code path for all three.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from forecasts import intermittent
from forecasts.calibration import IN_SAMPLE, Calibration, series_spread
from forecasts.calibration import apply as apply_calibration
from forecasts.prophet_model import ProphetConfig, fit_predict_prophet
from forecasts.quantiles import LEVELS, make_quantiles, residual_offsets, standardized_residuals
from forecasts.series import INTERMITTENT, SMOOTH

PROPHET = "prophet"
# the median of Prophet (with events), ETS and seasonal naive, point by point
ENSEMBLE = "ensemble"
ENSEMBLE_MEMBERS = (PROPHET, intermittent.ETS, intermittent.SEASONAL_NAIVE)
# The nightly model of daily series: the mean of Prophet and ENSEMBLE, i.e. Prophet pulled
# halfway to the median of Prophet, ETS and seasonal naive. Chosen on the forecast benchmark's
# points (bench/bench_forecast_blends.py; figures in docs/operations-forecasts.md) against
# Prophet alone, the median ensemble, other medians and means of the members and per-series
# selection: on the six daily data sets it is at most 11 % worse than the best single method
# of each (US births, where ETS alone wins; Prophet alone: +44 % there), ≤ 4 % on the others,
# and the only candidate within 4 % of Prophet on Chicago, where the home-game events carry
# the forecast. Per-series selection lost to it everywhere (too few origins per series to
# choose on). Hourly series keep Prophet alone: the lag-24 naive and ETS (season 24, blind
# to the week) pulled it from 0.60 to 0.65–0.88 MASE on the hourly data set.
BLEND = "blend"
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
    calibrate: bool = True         # False: the series' own in-sample quantiles only
    calibration: Calibration | None = None
    prophet: ProphetConfig = field(default_factory=ProphetConfig)


@dataclass(frozen=True)
class SeriesForecast:
    series_id: str
    future_ds: np.ndarray
    method: str
    point: np.ndarray
    quantiles: np.ndarray          # (h, len(LEVELS))
    calibration_scale: float       # the series' in-sample residual spread (s_in)
    fallback_reason: str | None
    seconds: float
    spread: float = 1.0
    calibration: str = IN_SAMPLE   # the calibration group(s) used, or in_sample


def season_length(freq: str) -> int:
    return 24 if freq.upper().startswith("H") else 7


def fill_gaps(y: np.ndarray, season: int) -> np.ndarray:
    """Missing values (NaN: a period not observed, backtest.read_series_file) filled for
    fitting: the value one season earlier when there is one, else linear between the
    neighbours, 0 when nothing was observed. The fill is only ever fitted, never scored."""
    y = np.asarray(y, dtype=float).copy()
    miss = ~np.isfinite(y)
    if not miss.any():
        return y
    if miss.all():
        return np.zeros_like(y)
    for i in np.flatnonzero(miss):
        if i >= season and np.isfinite(y[i - season]):
            y[i] = y[i - season]
    still = ~np.isfinite(y)
    if still.any():
        idx = np.arange(len(y))
        y[still] = np.interp(idx[still], idx[~still], y[~still])
    return y


def primary_method(kind: str, freq: str = "D") -> str:
    """The nightly method of a series class. Intermittent daily series get the blend too:
    Croston's flat rate scored 5–13 % worse MASE than it on the simulated cities' many-zero
    series (the median with seasonal naive and ETS keeps Prophet's Gaussian fit in check)."""
    if kind in (SMOOTH, INTERMITTENT):
        return PROPHET if freq.upper().startswith("H") else BLEND
    return intermittent.SEASONAL_NAIVE


def _members(task: SeriesTask, ds: np.ndarray, y: np.ndarray, future_ds: np.ndarray,
             att_hist: np.ndarray | None, att_future: np.ndarray | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(point, fitted) of every ENSEMBLE member that could be fitted."""
    h = len(future_ds)
    out = {}
    for m in ENSEMBLE_MEMBERS:
        try:
            p, f, _ = _fit(m, task, ds, y, future_ds, att_hist, att_future)
            if len(p) == h and np.all(np.isfinite(p)):
                out[m] = (p, np.asarray(f, dtype=float))
        except Exception:  # a member that fails leaves the others
            continue
    if not out:
        raise ValueError("no ensemble member could be fitted")
    return out


def _fit(method: str, task: SeriesTask, ds: np.ndarray, y: np.ndarray, future_ds: np.ndarray,
         att_hist: np.ndarray | None, att_future: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    h = len(future_ds)
    if method in (ENSEMBLE, BLEND):
        if not np.any(y > 0):  # no demand ever: nothing to blend (and Prophet cannot fit it)
            return np.zeros(h), np.zeros(len(y)), intermittent.ZERO
        parts = _members(task, ds, y, future_ds, att_hist, att_future)
        point = np.median([p for p, _ in parts.values()], axis=0)
        fitted = np.median([f for _, f in parts.values()], axis=0)
        if method == BLEND and PROPHET in parts:
            point = (point + parts[PROPHET][0]) / 2
            fitted = (fitted + parts[PROPHET][1]) / 2
        return point, fitted, method
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
    if method == intermittent.AUTO_ETS:
        return intermittent.auto_ets(y, h, season_length(task.freq))
    if method == intermittent.ETS:
        return intermittent.ets(y, h, season_length(task.freq))
    if method == intermittent.AUTO_ARIMA:
        return intermittent.auto_arima(y, h, season_length(task.freq))
    return intermittent.seasonal_naive(y, h, season_length(task.freq))


def forecast_series(task: SeriesTask) -> SeriesForecast:
    t0 = time.perf_counter()
    raw = np.asarray(task.y, dtype=float)
    observed = np.isfinite(raw)
    y = fill_gaps(raw, season_length(task.freq)).clip(min=0)
    ds = np.asarray(task.ds)
    fut = np.asarray(task.future_ds)
    h = len(fut)
    want = task.method or primary_method(task.kind, task.freq)
    reason = None
    try:
        point, fitted, used = _fit(want, task, ds, y, fut, task.attendance_hist, task.attendance_future)
        if not np.all(np.isfinite(point)) or len(point) != h:
            raise ValueError(f"{want} returned {len(point)} values, non-finite={not np.all(np.isfinite(point))}")
    except Exception as exc:  # a failed fit must never leave a series out of the plan
        reason = f"{want}: {type(exc).__name__}: {str(exc)[:200]}"
        point, fitted, used = intermittent.seasonal_naive(y, h, season_length(task.freq))

    # intervals: the series' in-sample residual spread × the backtest-learned offsets of its
    # method/class/horizon (calibration.py); no refit. Without a table: in-sample quantiles.
    # residuals of observed periods only: a filled gap is fitted by construction
    obs = observed[-RESIDUAL_WINDOW:]
    z_in = standardized_residuals(y[-RESIDUAL_WINDOW:][obs], np.asarray(fitted)[-RESIDUAL_WINDOW:][obs])
    if used == intermittent.SEASONAL_NAIVE:
        z_in = z_in[season_length(task.freq):] if len(z_in) > 2 * season_length(task.freq) else z_in
    spread = series_spread(z_in)
    if len(z_in) < MIN_RESIDUALS:
        own = np.array([_NORMAL_Z.get(q, 0.0) for q in LEVELS])
    else:
        own = residual_offsets(z_in, LEVELS)
    cal = task.calibration if task.calibrate else None
    q = np.zeros((h, len(LEVELS)))
    sources = set()
    for k in range(h):
        hit = cal.lookup(used, task.kind, k + 1) if cal else None
        if hit is None or used in (intermittent.ZERO,):
            q[k] = make_quantiles(point[k:k + 1], own)[0]
            sources.add(IN_SAMPLE)
        else:
            q[k] = apply_calibration(point[k:k + 1], spread, hit[0])[0]
            sources.add(hit[1])
    return SeriesForecast(
        series_id=task.series_id,
        future_ds=fut,
        method=used,
        point=np.round(np.maximum(point, 0.0), 6),
        quantiles=np.round(q, 6),
        calibration_scale=round(spread, 6),
        fallback_reason=reason,
        seconds=time.perf_counter() - t0,
        spread=round(spread, 6),
        calibration=",".join(sorted(sources)),
    )
