"""Prophet's MAP fit without the Prophet object: the same Stan model, data and arguments.

Why: profiling one two-year daily fit (bench/bench_forecasts.py) put ~60 % of its CPU in
Python around Stan — Prophet assembling its design matrix through pandas frames, crosstabs
and per-column concats (~55 ms), cmdstanpy's run bookkeeping and CSV parsing (~25 ms) —
against ~25 ms in the Stan optimiser itself. For the one model civicflow fits (linear
growth, additive Fourier seasonalities, additive regressors that are not standardised, no
Prophet-built holidays, MAP), this module builds the identical Stan input with numpy, runs
Prophet's compiled `prophet_model.bin` with the arguments cmdstanpy would pass (same seed,
L-BFGS, Newton for T < 100 and as the fallback when L-BFGS fails), and predicts
trend + X·β. Same inputs to the same binary: the same fit, bit for bit
(tests/test_forecasts_speed.py compares it with Prophet's own path).

Anything outside that model goes through Prophet (prophet_model.py). Each fit's files live
in a fresh directory under `tempfile.gettempdir()` (the pool points that into a directory
it owns) and are deleted when the fit returns, failed or not.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

try:  # serialises numpy arrays natively (a dependency of dependencies here); optional
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

# Prophet's defaults for what civicflow does not set (forecaster.Prophet.__init__)
N_CHANGEPOINTS = 25
CHANGEPOINT_RANGE = 0.8
SEASONALITY_PRIOR_SCALE = 10.0
# Prophet's built-in seasonalities, in the order it adds them: (name, period days, Fourier order)
SEASONALITIES = (("yearly", 365.25, 10), ("weekly", 7.0, 3), ("daily", 1.0, 4))
NEWTON_BELOW_T = 100  # prophet.models.CmdStanPyBackend.fit: Newton for short histories
ITER = 10_000


class StanFailed(RuntimeError):
    """The optimiser exited non-zero (Prophet would raise the same from cmdstanpy)."""


@lru_cache(maxsize=1)
def model_binary() -> Path:
    """Prophet's compiled model, found without importing prophet (3 s of imports)."""
    spec = importlib.util.find_spec("prophet")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("prophet is not installed")
    exe = Path(list(spec.submodule_search_locations)[0]) / "stan_model" / "prophet_model.bin"
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} not found")
    return exe


@dataclass(frozen=True)
class Design:
    """Everything Stan and the prediction need, for history + future rows."""
    data: dict[str, object]        # Stan data (history rows), as prophet.models.prepare_data sends it
    init: dict[str, object]        # Prophet's initial values (calculate_initial_params)
    t: np.ndarray                  # scaled time of every row
    x: np.ndarray                  # (rows, K) features of every row, column-major (see design)
    changepoints_t: np.ndarray
    y_scale: float
    no_changepoints: bool          # Prophet folds delta into k then
    constant: bool                 # y constant: Prophet skips Stan and keeps the init


def design(
    dates: pd.Series,
    y: np.ndarray,
    regressors: list[tuple[str, np.ndarray, float]],
    seasonalities: tuple[str, ...],
    changepoint_prior_scale: float,
) -> Design:
    """The Stan input Prophet's `preprocess` + `calculate_initial_params` build.

    dates: every row (history first, then the future), sorted, as `pd.to_datetime` gives them;
    y: the history's values (its length says how many rows are history);
    regressors: (name, values for every row, prior scale), in `add_regressor` order;
    seasonalities: names from SEASONALITIES that are on.
    The vector operations on dates are Prophet's own pandas expressions (same units, same
    rounding); the rest is numpy in Prophet's column order.
    """
    n = len(y)
    y = np.asarray(y, dtype=float)
    hist = dates.iloc[:n]
    start = hist.min()
    t_scale = hist.max() - start
    t = np.asarray((dates - start) / t_scale, dtype=float)          # setup_dataframe
    y_scale = float(np.abs(y).max()) or 1.0                          # initialize_scales, absmax
    y_scaled = (y - 0.0) / y_scale

    blocks, sigmas = [], []
    if seasonalities:
        # fourier_series, on days since the epoch
        days = np.asarray((dates - pd.Timestamp("1970-01-01")).dt.total_seconds() / (24 * 60 * 60), dtype=float)
        x_t = np.pi * 2 * days
        for name, period, order in SEASONALITIES:
            if name not in seasonalities:
                continue
            f = np.empty((len(dates), 2 * order))
            for i in range(order):
                c = (i + 1) / period * x_t
                f[:, 2 * i] = np.sin(c)
                f[:, 2 * i + 1] = np.cos(c)
            blocks.append(f)
            sigmas += [SEASONALITY_PRIOR_SCALE] * f.shape[1]
    for _name, values, prior in regressors:
        # standardize=False: Prophet's (x - 0.0) / 1.0, i.e. the values as floats
        blocks.append(np.asarray(values, dtype=float).reshape(-1, 1))
        sigmas.append(float(prior))
    dummy = not blocks
    if dummy:  # Prophet's placeholder column when there is no feature at all
        blocks.append(np.zeros((len(dates), 1)))
        sigmas.append(1.0)
    # column-major like the frames Prophet's path stacks: BLAS then sums X·β in the same
    # order and the forecast is the same to the last bit, not just to 1e-14
    x = np.asfortranarray(np.hstack(blocks))
    k_cols = x.shape[1]

    # set_changepoints: evenly through the first 80 % of the history
    hist_size = int(np.floor(n * CHANGEPOINT_RANGE))
    n_cp = min(N_CHANGEPOINTS, hist_size - 1)
    if n_cp > 0:
        idx = np.linspace(0, hist_size - 1, n_cp + 1).round().astype(int)[1:]
        changepoints_t = np.sort(t[idx])
    else:
        changepoints_t = np.array([0])  # Prophet's dummy changepoint

    # linear_growth_init: through the first and the last point
    k = (y_scaled[n - 1] - y_scaled[0]) / (t[n - 1] - t[0])
    m = y_scaled[0] - k * t[0]
    data = {
        "T": n, "S": len(changepoints_t), "K": k_cols, "tau": float(changepoint_prior_scale),
        "trend_indicator": 0, "y": y_scaled, "t": t[:n], "cap": np.zeros(n), "t_change": changepoints_t,
        "s_a": np.full(k_cols, 0 if dummy else 1, dtype=np.int64), "s_m": np.zeros(k_cols, dtype=np.int64),
        "X": x[:n], "sigmas": np.asarray(sigmas, dtype=float),
    }
    init = {"k": float(k), "m": float(m), "delta": np.zeros(len(changepoints_t)), "beta": np.zeros(k_cols),
            "sigma_obs": 1.0}
    return Design(data, init, t, x, changepoints_t, y_scale, no_changepoints=n_cp <= 0,
                  constant=bool(y.min() == y.max()))


def _write_json(path: Path, values: dict[str, object]) -> None:
    """What cmdstanpy's write_stan_json writes (numbers as the shortest round-trip text)."""
    if _orjson is not None:
        out = {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v) for k, v in values.items()}
        path.write_bytes(_orjson.dumps(out, option=_orjson.OPT_SERIALIZE_NUMPY))
        return
    import json

    path.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in values.items()}))


def _read_estimate(csv: Path) -> dict[str, np.ndarray]:
    """The optimum from cmdstan's output CSV: `#` comments, a header, the estimate last."""
    rows = [ln for ln in csv.read_text().splitlines() if ln and not ln.startswith("#")]
    header, values = rows[0].split(","), np.array(rows[-1].split(","), dtype=float)
    out: dict[str, list[float]] = {}
    for name, v in zip(header, values):
        out.setdefault(name.split(".")[0].split("[")[0], []).append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def _run(exe: Path, wdir: Path, seed: int, algorithm: str) -> dict[str, np.ndarray]:
    out = wdir / f"out-{algorithm}.csv"
    cmd = [str(exe), "random", f"seed={seed}", "data", f"file={wdir / 'data.json'}",
           f"init={wdir / 'init.json'}", "output", f"file={out}", "method=optimize",
           f"algorithm={algorithm}", f"iter={ITER}"]
    # the child inherits this process's environment (a pool worker's thread and temp variables)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = proc.stdout.decode(errors="replace").strip().splitlines()[-3:]
        raise StanFailed(f"prophet_model {algorithm} exited {proc.returncode}: {' | '.join(tail)}")
    return _read_estimate(out)


def optimize(d: Design, seed: int) -> dict[str, np.ndarray]:
    """MAP estimate: k, m, delta, beta, sigma_obs (1-D arrays), as Prophet.fit leaves them."""
    if d.constant:  # Prophet.fit: a flat history needs no optimiser
        params = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in d.init.items()}
        params["sigma_obs"] = np.array([1e-9])
    else:
        exe = model_binary()
        wdir = Path(tempfile.mkdtemp(prefix="cf-stan-"))
        try:
            _write_json(wdir / "data.json", d.data)
            _write_json(wdir / "init.json", d.init)
            algorithm = "newton" if int(d.data["T"]) < NEWTON_BELOW_T else "lbfgs"
            try:
                params = _run(exe, wdir, seed, algorithm)
            except StanFailed:
                if algorithm == "newton":
                    raise
                params = _run(exe, wdir, seed, "newton")  # Prophet's fallback
        finally:
            shutil.rmtree(wdir, ignore_errors=True)
    if d.no_changepoints:
        params["k"] = params["k"] + params["delta"].reshape(-1)
        params["delta"] = np.zeros(params["delta"].shape)
    return params


def predict(d: Design, params: dict[str, np.ndarray]) -> np.ndarray:
    """yhat for every row: Prophet's piecewise-linear trend + X·β, both × y_scale."""
    k, m = float(params["k"][0]), float(params["m"][0])
    deltas = np.asarray(params["delta"], dtype=float)
    cp = d.changepoints_t
    deltas_t = (cp[None, :] <= d.t[..., None]) * deltas
    trend = ((deltas_t.sum(axis=1) + k) * d.t + ((deltas_t * -cp).sum(axis=1) + m)) * d.y_scale + 0.0
    beta = np.asarray(params["beta"], dtype=float)
    return trend + (d.x @ beta[: d.x.shape[1]]) * d.y_scale
