"""Prophet (alone on hourly series, the anchor of the nightly blend on daily ones): events as holidays, attendance as a regressor, seasonality
only when the history can identify it, non-negative output.

Kept fast on purpose (DESIGN.md traps): `uncertainty_samples=0` — the intervals come from
calibrated residuals (quantiles.py), not from Prophet's sampling, whose `predict()` cost
grows with the number of samples and whose intervals are off on count data anyway.

Other measured savings (bench/bench_forecasts.py), none changing a number: the fit runs
Prophet's Stan model without the Prophet object (prophet_direct.py: the same input built
with numpy, the same binary and arguments, bit-identical forecasts), event features built
with numpy and passed as regressors with the holiday prior (`holiday_indicators`). The
Prophet-object path (`_fit_with_prophet`: Stan input JSON written from numpy,
`speed_up_stan_io`; point forecast as trend + X·beta, `_predict_additive`) is kept as the
reference the direct path is tested against and as its fallback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from forecasts import prophet_direct

HOLIDAYS_PRIOR_SCALE = 10.0  # Prophet's default holidays_prior_scale

_QUIET = False


_FAST_JSON = False


def _fast_write_stan_json(path: str, data) -> None:
    """cmdstanpy hands every fit's data (a 730 × 30 feature matrix for two years of daily
    history) to stanio, which converts it value by value in Python and writes it with the
    pure-Python JSON encoder: measured ~40 % of a Prophet fit here. numpy's tolist() and the
    C encoder give the same JSON in a fraction of the time. Anything unusual (NaN, objects)
    goes through the original writer."""
    out = {}
    for k, v in data.items():
        a = np.asarray(v)
        if a.dtype == bool:
            a = a.astype(np.int64)
        if a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.all(np.isfinite(a))):
            return _ORIG_WRITE_STAN_JSON(path, data)
        out[k] = a
    if _orjson is not None:  # serialises numpy arrays natively: another ~3x on the encoding
        with open(path, "wb") as fb:
            fb.write(_orjson.dumps({k: (np.ascontiguousarray(a) if a.ndim else a.item()) for k, a in out.items()},
                                   option=_orjson.OPT_SERIALIZE_NUMPY))
        return
    with open(path, "w") as fd:
        fd.write(json.dumps({k: (a.tolist() if a.ndim else a.item()) for k, a in out.items()}))


_ORIG_WRITE_STAN_JSON = None
try:  # present in the environment (a dependency of dependencies); optional here
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


def speed_up_stan_io() -> None:
    global _FAST_JSON, _ORIG_WRITE_STAN_JSON
    if _FAST_JSON:
        return
    try:
        import cmdstanpy.utils.filesystem as fs

        _ORIG_WRITE_STAN_JSON = fs.write_stan_json
        fs.write_stan_json = _fast_write_stan_json
    except Exception:  # an internal moved: keep the slow path rather than fail
        pass
    _FAST_JSON = True


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


def holiday_indicators(days: np.ndarray, events: list[tuple[str, date, date]],
                       cfg: "ProphetConfig") -> dict[str, np.ndarray]:
    """Prophet-style holiday features, built with numpy: one 0/1 column per (holiday, day
    offset in its window), with Prophet's holiday prior (holidays_prior_scale) when added as
    regressors; the window days are taken around each span of consecutive event days. Prophet builds them
    with a Python loop and a `pd.to_datetime` per holiday row, twice per series (fit and
    predict); for a two-year history with an event every couple of weeks that was ~20 % of
    the fit. `days`: datetime64 of every row (history then future); hourly rows use their date."""
    out: dict[str, np.ndarray] = {}
    if not events:
        return out
    d = np.asarray(days).astype("datetime64[D]")
    by_name: dict[str, list[np.ndarray]] = {}
    for name, start, end in events:
        s, e = np.datetime64(start, "D"), np.datetime64(end or start, "D")
        by_name.setdefault(name, []).append(np.arange(s, max(s, e) + 1))
    one = np.timedelta64(1, "D")
    for name in sorted(by_name):
        hd = np.unique(np.concatenate(by_name[name]))
        on = np.isin(d, hd)
        out[f"hol_{name}_p0"] = on.astype(float)
        # the window is around each *span* of consecutive event days, not around every day:
        # Prophet's per-day windows overlap inside a multi-day festival (day 2 is at once
        # "the day", "the day after" and "the day before"), which let three collinear effects
        # add up to nonsense (seen: a 0 forecast for the third day of a festival)
        for off in range(1, -cfg.holiday_lower_window + 1):
            out[f"hol_{name}_m{off}"] = (np.isin(d + off * one, hd) & ~on).astype(float)
        for off in range(1, cfg.holiday_upper_window + 1):
            out[f"hol_{name}_p{off}"] = (np.isin(d - off * one, hd) & ~on).astype(float)
    return out


def _predict_additive(m, df: pd.DataFrame) -> np.ndarray:
    """yhat = trend + X·beta·y_scale, the point forecast of `m.predict` for a model whose
    components are all additive, without the per-component frames `predict` assembles
    (~a third of a fit's time here). Same design matrix as the fit: Prophet's own Fourier
    features and the (already standardised by setup_dataframe) regressors, in Prophet's
    order. Anything else (multiplicative terms, conditional seasonalities, Prophet-built
    holidays) goes through `m.predict`."""
    simple = (
        m.holidays is None
        and all(p["mode"] == "additive" and p["condition_name"] is None for p in m.seasonalities.values())
        and all(p["mode"] == "additive" for p in m.extra_regressors.values())
        and m.growth == "linear"
    )
    if not simple:
        return m.predict(df)["yhat"].to_numpy()
    d = m.setup_dataframe(df.copy())
    blocks = [m.make_seasonality_features(d["ds"], p["period"], p["fourier_order"], name).to_numpy()
              for name, p in m.seasonalities.items()]
    blocks += [d[[name]].to_numpy(dtype=float) for name in m.extra_regressors]
    beta = np.asarray(m.params["beta"], dtype=float)[0]
    if not blocks:
        x_beta = np.zeros(len(d))
    else:
        x = np.hstack(blocks)
        x_beta = x @ beta[: x.shape[1]]
    trend = np.asarray(m.predict_trend(d), dtype=float)
    return trend + x_beta * m.y_scale


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


def _regressors(days: np.ndarray, events: list[tuple[str, date, date]],
                attendance_hist: np.ndarray | None, attendance_future: np.ndarray | None,
                cfg: ProphetConfig) -> tuple[list[tuple[str, np.ndarray, float]], bool]:
    """(name, values for history + future, prior scale) in the order they are added to the
    model: event features (holiday prior), then attendance when it can be learned."""
    hp = HOLIDAYS_PRIOR_SCALE
    regs = [(col, v, hp) for col, v in holiday_indicators(days, events, cfg).items()]
    use_reg = (
        attendance_hist is not None
        and attendance_future is not None
        and int(np.count_nonzero(attendance_hist)) >= cfg.min_event_days_regressor
        and float(np.std(attendance_hist[attendance_hist > 0])) > 0
    )
    if use_reg:
        # log scale: lift grows less than linearly with crowd size (a 50k match ≠ 10× a 5k fair)
        scale = float(np.log1p(attendance_hist.max())) or 1.0
        att = np.concatenate([np.log1p(attendance_hist) / scale, np.log1p(attendance_future) / scale])
        regs.append(("attendance", att, hp))  # add_regressor's default prior: the holiday prior
    return regs, use_reg


def _seasonalities(span_days: int, n_rows: int, freq: str, cfg: ProphetConfig) -> tuple[str, ...]:
    """Seasonality only when the history can identify it."""
    on = {"yearly": span_days >= cfg.min_days_yearly, "weekly": span_days >= cfg.min_days_weekly,
          "daily": freq.upper().startswith("H") and n_rows >= 48}
    return tuple(name for name, keep in on.items() if keep)


def _fit_with_prophet(dates: pd.Series, y: np.ndarray, regs: list[tuple[str, np.ndarray, float]],
                      seasonalities: tuple[str, ...], cfg: ProphetConfig) -> np.ndarray:
    """The same model through the Prophet object (the reference prophet_direct is tested
    against, and the path for an environment where the direct one cannot run)."""
    quiet_stan_logs()
    from prophet import Prophet

    quiet_stan_logs()
    speed_up_stan_io()
    n = len(y)
    m = Prophet(
        growth="linear",
        yearly_seasonality="yearly" in seasonalities,
        weekly_seasonality="weekly" in seasonalities,
        daily_seasonality="daily" in seasonalities,
        changepoint_prior_scale=cfg.changepoint_prior_scale,
        uncertainty_samples=0,
    )
    hist = pd.DataFrame({"ds": dates.iloc[:n].reset_index(drop=True), "y": y.astype(float)})
    fut = pd.DataFrame({"ds": dates.iloc[n:].reset_index(drop=True)})
    for col, v, prior in regs:
        hist[col] = v[:n]
        fut[col] = v[n:]
        m.add_regressor(col, prior_scale=prior, standardize=False, mode="additive")
    before = _tmp_listing()
    try:
        m.fit(hist, seed=cfg.seed)
    finally:
        _cleanup_new_tmp(before)
    return _predict_additive(m, pd.concat([hist.drop(columns="y"), fut], ignore_index=True))


def fit_predict_prophet(
    ds: np.ndarray,
    y: np.ndarray,
    future_ds: np.ndarray,
    events: list[tuple[str, date, date]] | None = None,
    attendance_hist: np.ndarray | None = None,
    attendance_future: np.ndarray | None = None,
    freq: str = "D",
    cfg: ProphetConfig = ProphetConfig(),
    engine: str = "direct",
) -> ProphetResult:
    """engine: "direct" (prophet_direct: same fit, a fraction of the Python around it) or
    "prophet" (the Prophet object). "direct" uses Prophet when the model binary is missing."""
    ds, future_ds = np.asarray(ds), np.asarray(future_ds)
    n = len(ds)
    both = np.concatenate([ds, future_ds])
    dates = pd.Series(pd.to_datetime(both))
    span_days = (dates.iloc[:n].max() - dates.iloc[:n].min()).days + 1 if n else 0
    regs, use_reg = _regressors(both, list(events or []), attendance_hist, attendance_future, cfg)
    seas = _seasonalities(span_days, n, freq, cfg)
    y = np.asarray(y, dtype=float)
    pred = None
    if engine == "direct":
        try:
            d = prophet_direct.design(dates, y, regs, seas, cfg.changepoint_prior_scale)
            pred = prophet_direct.predict(d, prophet_direct.optimize(d, cfg.seed))
        except FileNotFoundError:  # no compiled model where we look: let Prophet find its own
            pred = None
    if pred is None:
        pred = _fit_with_prophet(dates, y, regs, seas, cfg)
    cap = cfg.growth_cap_factor * max(float(np.max(y)) if len(y) else 0.0, 1.0)
    pred = np.clip(pred, 0.0, cap)
    return ProphetResult(point=pred[n:], fitted=pred[:n], used_regressor=use_reg,
                         n_holidays=len({e[0] for e in events or []}))
