"""Prophet for smooth series: events as holidays, attendance as a regressor, seasonality
only when the history can identify it, non-negative output.

Kept fast on purpose (DESIGN.md traps): `uncertainty_samples=0` — the intervals come from
calibrated residuals (quantiles.py), not from Prophet's sampling, whose `predict()` cost
grows with the number of samples and whose intervals are off on count data anyway.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

_QUIET = False


def quiet_stan_logs() -> None:
    """cmdstanpy logs two INFO lines per fit; in a nightly run of hundreds of series that
    drowns everything else."""
    global _QUIET
    if _QUIET:
        return
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.WARNING)
        lg.propagate = False
        lg.handlers = [logging.NullHandler()]
    _QUIET = True


@dataclass(frozen=True)
class ProphetConfig:
    holiday_lower_window: int = -1   # the day before an event (set-up, early arrivals)
    holiday_upper_window: int = 1    # the day after (departures, returns)
    min_days_weekly: int = 14
    min_days_yearly: int = 730       # below two cycles the yearly term is under-identified
    min_event_days_regressor: int = 6  # attendance regressor only with enough event days to learn it
    changepoint_prior_scale: float = 0.05
    growth_cap_factor: float = 3.0   # forecasts never above this × the historical max
    seed: int = 20240601


@dataclass(frozen=True)
class ProphetResult:
    point: np.ndarray          # forecast for the future days, ≥ 0
    fitted: np.ndarray         # in-sample fit, for residuals
    used_regressor: bool
    n_holidays: int


def holidays_frame(events: list[tuple[str, date, date]], cfg: ProphetConfig) -> pd.DataFrame | None:
    """Prophet holidays from (kind/name, start, end) events: one row per event day.

    Named by the event's kind (not its id) so the effect is learned across all events of
    that kind — a one-off name would get one observation and no future use.
    """
    rows: list[tuple[str, pd.Timestamp]] = []
    for name, start, end in events:
        for d in pd.date_range(start, end, freq="D"):
            rows.append((name, d))
    if not rows:
        return None
    h = pd.DataFrame(rows, columns=["holiday", "ds"]).drop_duplicates().sort_values(["holiday", "ds"])
    h["lower_window"] = cfg.holiday_lower_window
    h["upper_window"] = cfg.holiday_upper_window
    return h.reset_index(drop=True)


def _cleanup_new_tmp(before: set[str]) -> None:
    """cmdstanpy leaves each fit's CSV/JSON files in its temp dir until interpreter exit;
    a long nightly run would fill /tmp. Remove what this fit created."""
    try:
        import cmdstanpy

        tmp = cmdstanpy._TMPDIR
        for name in set(os.listdir(tmp)) - before:
            p = os.path.join(tmp, name)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.remove(p)
                except OSError:
                    pass
    except Exception:  # cleanup must never fail a forecast
        pass


def _tmp_listing() -> set[str]:
    try:
        import cmdstanpy

        return set(os.listdir(cmdstanpy._TMPDIR))
    except Exception:
        return set()


def fit_predict_prophet(
    ds: np.ndarray,
    y: np.ndarray,
    future_ds: np.ndarray,
    events: list[tuple[str, date, date]] | None = None,
    attendance_hist: np.ndarray | None = None,
    attendance_future: np.ndarray | None = None,
    freq: str = "D",
    cfg: ProphetConfig = ProphetConfig(),
) -> ProphetResult:
    quiet_stan_logs()
    from prophet import Prophet

    quiet_stan_logs()
    ds = pd.to_datetime(ds)
    future_ds = pd.to_datetime(future_ds)
    span_days = (ds.max() - ds.min()).days + 1 if len(ds) else 0
    holidays = holidays_frame(events or [], cfg)

    use_reg = (
        attendance_hist is not None
        and attendance_future is not None
        and int(np.count_nonzero(attendance_hist)) >= cfg.min_event_days_regressor
        and float(np.std(attendance_hist[attendance_hist > 0])) > 0
    )
    m = Prophet(
        growth="linear",
        yearly_seasonality=span_days >= cfg.min_days_yearly,
        weekly_seasonality=span_days >= cfg.min_days_weekly,
        daily_seasonality=(freq.upper().startswith("H") and len(ds) >= 48),
        holidays=holidays,
        changepoint_prior_scale=cfg.changepoint_prior_scale,
        uncertainty_samples=0,
    )
    hist = pd.DataFrame({"ds": ds, "y": y.astype(float)})
    fut = pd.DataFrame({"ds": future_ds})
    if use_reg:
        # log scale: lift grows less than linearly with crowd size (a 50k match ≠ 10× a 5k fair)
        scale = float(np.log1p(attendance_hist.max())) or 1.0
        hist["attendance"] = np.log1p(attendance_hist) / scale
        fut["attendance"] = np.log1p(attendance_future) / scale
        m.add_regressor("attendance", standardize=False)
    before = _tmp_listing()
    try:
        m.fit(hist, seed=cfg.seed)
    finally:
        _cleanup_new_tmp(before)
    both = pd.concat([hist.drop(columns="y"), fut], ignore_index=True)
    pred = m.predict(both)["yhat"].to_numpy()
    cap = cfg.growth_cap_factor * max(float(np.max(y)) if len(y) else 0.0, 1.0)
    pred = np.clip(pred, 0.0, cap)
    n = len(hist)
    return ProphetResult(point=pred[n:], fitted=pred[:n], used_regressor=use_reg,
                         n_holidays=0 if holidays is None else int(holidays["holiday"].nunique()))
