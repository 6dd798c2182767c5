"""What the plan is worth: a backtest simulation of fulfilment cost.

Cost model (per neighbourhood × category × day, costs from `marts.dim_categories`, as the
source contract defines them):

- a pre-staged unit that is picked up is fulfilled locally — the cheapest way, and the
  same cost under every policy, so it is the zero of the scale;
- each unit of demand beyond what was staged is sent reactively from the central depot:
  `under_cost` per unit (EUR);
- each staged unit that is not picked up is hauled back: `over_cost` per unit (EUR).

    cost(S, D) = under_cost · max(D − S, 0) + over_cost · max(S − D, 0)

Policies compared on the same days (the backtest's out-of-sample days):

- `civicflow`: S = the newsvendor quantile of the calibrated forecast made at the
  backtest origin (the plan's rule), capped by the neighbourhood's hub capacity;
- `reactive`: S = 0 — everything from the depot (cost = under_cost · D);
- `yesterday`: S = the demand of the day before (the actual one, capped by capacity).

The backtest forecasts 1…h days ahead from each origin while `yesterday` always knows the
previous day, so the comparison is conservative for civicflow (the nightly plan is one day
ahead). The reduction is 1 − cost(civicflow) / cost(baseline), summed over all series and
days; its 95 % interval is a bootstrap over days (a day's series share weather, events
and weekday, so days — not rows — are the independent unit).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from forecasts.planner import DEFAULT_OVER_COST, DEFAULT_UNDER_COST, critical_ratio, newsvendor_units
from forecasts.quantiles import LEVEL_COLUMNS

CIVICFLOW = "civicflow"
REACTIVE = "reactive"
YESTERDAY = "yesterday"
POLICIES = (CIVICFLOW, REACTIVE, YESTERDAY)



def nearest_forecasts(points: pl.DataFrame) -> pl.DataFrame:
    """civicflow's backtest points, one forecast per (series, day): origins overlap only when
    step < horizon; the nearest (smallest step) is kept."""
    p = points.filter(pl.col("method") == CIVICFLOW).sort("series_id", "ds", "step")
    return p.unique(subset=["series_id", "ds"], keep="first", maintain_order=True)

def category_of(series_id: str) -> str:
    return series_id.split("|", 1)[1] if "|" in series_id else series_id


def policy_costs(
    points: pl.DataFrame,
    history: dict[str, tuple[np.ndarray, np.ndarray]],
    costs: dict[str, tuple[float, float]] | None = None,
    capacity: dict[str, int] | None = None,
) -> pl.DataFrame:
    """One row per series × day (civicflow method rows of the backtest points, step any):
    demand, staged units and cost under each policy."""
    costs = costs or {}
    capacity = capacity or {}
    p = nearest_forecasts(points)
    if p.is_empty():
        return pl.DataFrame()
    sids = p["series_id"].to_list()
    cats = [category_of(s) for s in sids]
    under = np.array([costs.get(c, (DEFAULT_UNDER_COST, DEFAULT_OVER_COST))[0] for c in cats])
    over = np.array([costs.get(c, (DEFAULT_UNDER_COST, DEFAULT_OVER_COST))[1] for c in cats])
    q = p.select(LEVEL_COLUMNS).to_numpy().astype(float)
    ratios = np.array([critical_ratio(u, o) for u, o in zip(under, over)])
    staged = np.array([newsvendor_units(q[i:i + 1], ratios[i])[0] for i in range(len(q))], dtype=float)
    cap = np.array([capacity.get(s, np.inf) for s in sids], dtype=float)
    d = p["y"].to_numpy().astype(float)
    # yesterday's actual demand, from the full history
    idx = {s: {np.datetime64(t, "D"): k for k, t in enumerate(history[s][0].astype("datetime64[D]"))}
           for s in set(sids) if s in history}
    yest = np.zeros(len(p))
    for i, (s, day) in enumerate(zip(sids, p["ds"].to_list())):
        k = idx.get(s, {}).get(np.datetime64(day, "D") - np.timedelta64(1, "D"))
        yest[i] = history[s][1][k] if k is not None else 0.0
    out = {"series_id": sids, "category": cats, "ds": p["ds"], "demand": d, "under_cost": under, "over_cost": over}
    for name, s in ((CIVICFLOW, staged), (REACTIVE, np.zeros(len(p))), (YESTERDAY, yest)):
        s = np.minimum(s, cap)
        out[f"staged_{name}"] = s
        out[f"cost_{name}"] = under * np.maximum(d - s, 0) + over * np.maximum(s - d, 0)
    return pl.DataFrame(out)


def summarise(rows: pl.DataFrame, n_boot: int = 2000, seed: int = 20240601) -> pl.DataFrame:
    """Per policy: total cost, units short/excess, and the reduction of civicflow's cost
    against it with a day-bootstrap 95 % interval."""
    if rows.is_empty():
        return pl.DataFrame()
    daily = rows.group_by("ds").agg(
        *[pl.col(f"cost_{p}").sum() for p in POLICIES],
        pl.col("demand").sum(),
    ).sort("ds")
    rng = np.random.default_rng(seed)
    n = daily.height
    boot = rng.integers(0, n, size=(n_boot, n))
    civ = daily[f"cost_{CIVICFLOW}"].to_numpy()
    out = []
    for pol in POLICIES:
        c = daily[f"cost_{pol}"].to_numpy()
        staged = rows[f"staged_{pol}"].to_numpy()
        dem = rows["demand"].to_numpy()
        total = float(c.sum())
        red = 1 - float(civ.sum()) / total if total > 0 else None
        lo = hi = None
        if total > 0 and pol != CIVICFLOW:
            cb, ob = civ[boot].sum(axis=1), c[boot].sum(axis=1)
            r = 1 - cb / np.where(ob > 0, ob, np.nan)
            lo, hi = (float(x) for x in np.nanquantile(r, [0.025, 0.975]))
        out.append({
            "policy": pol, "days": n, "series": rows["series_id"].n_unique(),
            "demand_units": float(dem.sum()), "staged_units": float(staged.sum()),
            "units_short": float(np.maximum(dem - staged, 0).sum()),
            "units_excess": float(np.maximum(staged - dem, 0).sum()),
            "cost": round(total, 2),
            "civicflow_reduction": None if pol == CIVICFLOW else red,
            "reduction_ci_low": lo, "reduction_ci_high": hi,
        })
    return pl.DataFrame(out)


SWEEP_LEVELS = tuple(round(x, 2) for x in np.arange(0.05, 0.991, 0.01))


def quantile_sweep(
    points: pl.DataFrame,
    costs: dict[str, tuple[float, float]] | None = None,
    capacity: dict[str, int] | None = None,
    levels: tuple[float, ...] = SWEEP_LEVELS,
) -> pl.DataFrame:
    """The decision checked on the backtest: realised cost per category when every series
    stages `newsvendor_units` at level τ instead of at its critical ratio, for each τ in
    `levels`. One row per category × level: cost, and `planner_level` (the ratio the
    planner picks for the category). If the forecast's quantiles are calibrated and the
    rule is right, the cost is lowest at (or within the grid's flat bottom around) the
    planner's level; `sweep_verdict` says per category."""
    costs = costs or {}
    capacity = capacity or {}
    p = nearest_forecasts(points)
    if p.is_empty():
        return pl.DataFrame()
    sids = p["series_id"].to_list()
    cats = np.array([category_of(s) for s in sids])
    under = np.array([costs.get(c, (DEFAULT_UNDER_COST, DEFAULT_OVER_COST))[0] for c in cats])
    over = np.array([costs.get(c, (DEFAULT_UNDER_COST, DEFAULT_OVER_COST))[1] for c in cats])
    q = p.select(LEVEL_COLUMNS).to_numpy().astype(float)
    d = p["y"].to_numpy().astype(float)
    cap = np.array([capacity.get(s, np.inf) for s in sids], dtype=float)
    rows = []
    for lv in levels:
        s = np.minimum(newsvendor_units(q, lv).astype(float), cap)
        cost = under * np.maximum(d - s, 0) + over * np.maximum(s - d, 0)
        for c in sorted(set(cats)):
            m = cats == c
            rows.append({"category": c, "level": float(lv), "cost": float(cost[m].sum()),
                         "staged_units": float(s[m].sum()), "demand_units": float(d[m].sum()),
                         "planner_level": round(critical_ratio(under[m][0], over[m][0]), 4)})
    return pl.DataFrame(rows)


def sweep_verdict(sweep: pl.DataFrame) -> pl.DataFrame:
    """Per category: the planner's level, the level of lowest realised cost, the cost at
    each and how much the planner's level costs above the best (in %)."""
    out = []
    for (c,), g in sweep.group_by("category", maintain_order=True):
        best = g.sort("cost", "level").row(0, named=True)
        at = g.with_columns((pl.col("level") - pl.col("planner_level")).abs().alias("_d")).sort("_d").row(0, named=True)
        out.append({"category": c, "planner_level": at["planner_level"], "best_level": best["level"],
                    "cost_at_planner": at["cost"], "best_cost": best["cost"],
                    "excess_pct": 100 * (at["cost"] / best["cost"] - 1) if best["cost"] > 0 else 0.0})
    return pl.DataFrame(out).sort("category")
