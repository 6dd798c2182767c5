"""Forecast quantiles from residuals, calibrated out of sample.

Why not Prophet's intervals: they assume Gaussian noise of constant scale, which on count
demand is too narrow on busy and event days and too wide (and negative) on quiet ones; and
they come from in-sample fit, which is always optimistic. Instead:

1. residuals are variance-stabilised for counts: z = (y - fit) / sqrt(max(fit, 1))
   (Poisson-like spread grows with the level), so an event day gets a wider interval;
2. out of sample, the level offsets are learned from rolling-origin backtest residuals
   per method × series class × horizon (calibration.py, conformal-style: calibrate on
   residuals the model has not seen); without a calibration table the series' own
   in-sample quantiles of z are used (too narrow: the fit has seen those points);
3. quantile = point + offset_level · sqrt(max(point, 1)), clipped at 0 and made monotone.
"""

from __future__ import annotations

import math

import numpy as np

LEVELS: tuple[float, ...] = (0.1, 0.5, 0.8, 0.9, 0.95)
LEVEL_COLUMNS: tuple[str, ...] = tuple(f"p{int(round(q * 100))}" for q in LEVELS)

MAX_SCALE = 4.0


def _stab(level: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(np.asarray(level, dtype=float), 1.0))


def standardized_residuals(y: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    f = np.asarray(fitted, dtype=float)
    ok = np.isfinite(y) & np.isfinite(f)
    return (y[ok] - f[ok]) / _stab(f[ok])


def calibration_scale(z_in: np.ndarray, z_out: np.ndarray | None) -> float:
    """How much wider out-of-sample errors are than in-sample ones (≥ 1, ≤ MAX_SCALE)."""
    if z_out is None or len(z_out) < 5 or len(z_in) < 5:
        return 1.0
    ins = float(np.mean(np.abs(z_in - np.median(z_in))))
    out = float(np.mean(np.abs(z_out - np.median(z_in))))
    if ins <= 1e-9:
        return MAX_SCALE if out > 1e-9 else 1.0
    return float(np.clip(out / ins, 1.0, MAX_SCALE))


def residual_offsets(z: np.ndarray, levels: tuple[float, ...] = LEVELS, scale: float = 1.0,
                     center: float | None = None) -> np.ndarray:
    """Level-wise quantiles of standardised residuals (0 when there are none), spread
    widened by `scale` around their median, re-centred on `center` when given (the median
    out-of-sample residual: a model that has started to under-forecast shifts its quantiles)."""
    z = np.asarray(z, dtype=float)
    if len(z) == 0:
        return np.zeros(len(levels))
    med = float(np.median(z))
    q = np.quantile(z, levels, method="linear")
    return (q - med) * scale + (med if center is None else center)


def make_quantiles(point: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(h, L) quantiles: never negative, non-decreasing across levels."""
    point = np.maximum(np.asarray(point, dtype=float), 0.0)
    q = point[:, None] + np.asarray(offsets)[None, :] * _stab(point)[:, None]
    q = np.maximum(q, 0.0)
    return np.maximum.accumulate(q, axis=1)


def enforce_monotone(q: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(np.maximum(np.asarray(q, dtype=float), 0.0), axis=1)


def interpolate_quantile(q: np.ndarray, target: float, levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Value at `target` level per row of (n, L) quantiles: linear between known levels,
    held at the end levels below the first; above the last, extrapolated along the last
    segment (up to level 0.99) — a critical ratio of 0.97 should stage more than p95."""
    q = enforce_monotone(np.atleast_2d(q))
    lv = np.asarray(levels, dtype=float)
    if target <= lv[0]:
        return q[:, 0].copy()
    if target >= lv[-1]:
        slope = (q[:, -1] - q[:, -2]) / (lv[-1] - lv[-2])
        return q[:, -1] + slope * (min(target, 0.99) - lv[-1])
    j = int(np.searchsorted(lv, target, side="right"))
    lo, hi = lv[j - 1], lv[j]
    w = (target - lo) / (hi - lo)
    return q[:, j - 1] * (1 - w) + q[:, j] * w


def pinball_loss(y: np.ndarray, q: np.ndarray, level: float) -> float:
    d = np.asarray(y, dtype=float) - np.asarray(q, dtype=float)
    return float(np.mean(np.maximum(level * d, (level - 1) * d)))


def cdf(quantiles: np.ndarray, x: float, levels: tuple[float, ...] = LEVELS) -> float:
    """P(D ≤ x) from one row of quantiles: piecewise linear between the known levels,
    linear from 0 below the first, an exponential tail above the last."""
    q = quantiles
    if x < q[0]:
        return levels[0] * max(x, 0.0) / q[0] if q[0] > 0 else 0.0  # (x < q[0] ≤ 0: below zero)
    if x >= q[-1]:
        return levels[-1] + (1 - levels[-1]) * (1 - math.exp(-(x - q[-1]) / max(q[-1] - q[-2], 1.0)))
    j = int(np.searchsorted(q, x, side="right"))
    lo, hi = q[j - 1], q[j]
    if hi <= lo:
        return levels[j]
    return levels[j - 1] + (levels[j] - levels[j - 1]) * (x - lo) / (hi - lo)


def randomised_pit(y: np.ndarray, q: np.ndarray, seed: int = 20240601,
                   levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Randomised PIT of integer counts (Czado, Gneiting & Held 2009): u = F(y−1) + V·(F(y) −
    F(y−1)), V ~ U(0, 1), F the forecast's CDF (`cdf`) read at whole units (F(k) = cdf(k + ½)). A calibrated
    forecast gives uniform u, so mean(u ≤ τ) is the coverage of level τ even where most
    days are 0: "y ≤ p10" counts every zero day under a zero p10 as covered (coverage ≈ 1 by
    construction), the PIT spreads it over the CDF's jump at 0. Non-integer actuals are
    rounded to whole units; seeded, so a rerun gives the same figure."""
    y = np.round(np.asarray(y, dtype=float))
    q = enforce_monotone(np.atleast_2d(q))
    v = np.random.default_rng(seed).random(len(y))
    # whole units read with the continuity correction the planner uses (P(D ≤ k) = F(k + ½)):
    # a quantile forecast does not say where between two whole units its CDF jumps
    hi = np.array([cdf(q[i], y[i] + 0.5, levels) for i in range(len(y))])
    lo = np.array([cdf(q[i], y[i] - 0.5, levels) if y[i] >= 1 else 0.0 for i in range(len(y))])
    return lo + v * np.maximum(hi - lo, 0.0)
