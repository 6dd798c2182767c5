"""The report's sentences: uncertainty in words, the expected shortfall and haul-back of the
staged quantity, the headline saving against the best simple policy, and the events of the
plan horizon with the lift the forecast applied.

Pure functions over the plan, the forecast (neighbourhood quantiles), recent demand, the
cost simulation and the event calendar.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from forecasts.quantiles import LEVEL_COLUMNS, LEVELS, enforce_monotone, interpolate_quantile

GRID = np.linspace(0.005, 0.995, 100)  # demand levels the expectations average over
CIVICFLOW, REACTIVE = "civicflow", "reactive"


def quantile_curve(q: np.ndarray) -> np.ndarray:
    """Demand at each GRID level for one row of forecast quantiles. Between the stored
    levels: linear; below p10: down along the p10–p50 slope (never under 0), so staged
    units that are likely hauled back are not understated; above p95: the planner's rule."""
    q = enforce_monotone(np.atleast_2d(q))
    out = np.array([float(interpolate_quantile(q, float(u))[0]) for u in GRID])
    lo, p10, p50 = LEVELS[0], q[0, 0], q[0, LEVELS.index(0.5)]
    slope = (p50 - p10) / (0.5 - lo)
    below = GRID < lo
    out[below] = np.maximum(p10 - slope * (lo - GRID[below]), 0.0)
    return out


def expected_short_and_back(q: np.ndarray, staged: float) -> tuple[float, float]:
    """E[units short] = E[(D − S)+] (sent reactively) and E[units hauled back] = E[(S − D)+]."""
    d = quantile_curve(q)
    return float(np.mean(np.maximum(d - staged, 0))), float(np.mean(np.maximum(staged - d, 0)))


def hub_outlook(plan: pl.DataFrame, forecast: pl.DataFrame, day: object) -> pl.DataFrame:
    """Per hub × category on `day`: staged units, the hub's share of the 10/50/90 % demand,
    the expected units short and hauled back, and a sentence saying it in words."""
    if plan.is_empty():
        return pl.DataFrame()
    names = "hub_name" in plan.columns
    staged = (plan.filter(pl.col("plan_date") == day)
              .group_by("hub_id", "neighbourhood_id", "category")
              .agg(pl.col("units").sum(), pl.col("hub_share").first(),
                   *([pl.col("hub_name").first()] if names else []))
              .sort("hub_id", "category"))
    fc = forecast.filter(pl.col("forecast_date") == day).select("neighbourhood_id", "category", *LEVEL_COLUMNS)
    rows = []
    for r in staged.join(fc, on=["neighbourhood_id", "category"], how="left").iter_rows(named=True):
        if r["p50"] is None:
            continue
        q = np.array([[r[c] * r["hub_share"] for c in LEVEL_COLUMNS]])
        short, back = expected_short_and_back(q, float(r["units"]))
        hub = r.get("hub_name") or r["hub_id"]
        p10, p50, p90 = (float(q[0, LEVELS.index(x)]) for x in (0.1, 0.5, 0.9))
        words = (f"On 9 days in 10, {r['category']} demand at {hub} stays under {math.ceil(p90):,} units "
                 f"(most likely {round(p50):,}; on 1 day in 10 under {math.floor(p10):,}). "
                 f"Staging {int(r['units']):,}: expect about {short:.1f} short and {back:.1f} hauled back.")
        rows.append({"hub_id": r["hub_id"], "hub": hub, "category": r["category"], "units": int(r["units"]),
                     "p10": round(p10, 1), "p50": round(p50, 1), "p90": round(p90, 1),
                     "expected_short": round(short, 2), "expected_back": round(back, 2), "words": words})
    return pl.DataFrame(rows)


def headline(value: pl.DataFrame) -> list[str]:
    """The saving against the cheapest simple policy first (with its 95 % interval), then
    against reactive (stage nothing); empty without a cost simulation."""
    if value.is_empty() or "civicflow_reduction" not in value.columns:
        return []
    others = value.filter((pl.col("policy") != CIVICFLOW) & pl.col("civicflow_reduction").is_not_null())
    simple = others.filter(pl.col("policy") != REACTIVE).sort("cost")
    out = []
    for r in [*simple.head(1).iter_rows(named=True), *others.filter(pl.col("policy") == REACTIVE).iter_rows(named=True)]:
        label = "staging yesterday's demand" if r["policy"] == "yesterday" else f"the {r['policy']} policy"
        if r["policy"] == REACTIVE:
            label = "staging nothing (reactive)"
        ci = ""
        if r.get("reduction_ci_low") is not None and r.get("reduction_ci_high") is not None:
            ci = f" (95 % interval {100 * r['reduction_ci_low']:.0f}–{100 * r['reduction_ci_high']:.0f} %)"
        out.append(f"{100 * r['civicflow_reduction']:.0f} % lower fulfilment cost than {label}{ci}")
    return out


def events_in_horizon(events: pl.DataFrame | None, plan: pl.DataFrame, forecast: pl.DataFrame,
                      history: pl.DataFrame) -> pl.DataFrame:
    """Every event overlapping the plan days, with attendance and, per hub of the venue's
    neighbourhood and category, the forecast median that day against the usual demand
    (mean of the same weekday in the recent history) — the lift the forecast applied."""
    if events is None or events.is_empty() or plan.is_empty():
        return pl.DataFrame()
    first, last = plan["plan_date"].min(), plan["plan_date"].max()
    ev = events.filter((pl.col("start_date") <= last) & (pl.col("end_date") >= first)).sort("start_date", "event_id")
    hubs = plan.select("hub_id", "neighbourhood_id", "category", "hub_share",
                       *(["hub_name"] if "hub_name" in plan.columns else [])).unique().sort("hub_id", "category")
    hist = history.with_columns(pl.col("ds").dt.weekday().alias("dow"))
    rows = []
    for e in ev.iter_rows(named=True):
        day = max(e["start_date"], first)
        at = hubs.filter(pl.col("neighbourhood_id") == e["venue_neighbourhood_id"])
        for h in at.iter_rows(named=True):
            f = forecast.filter((pl.col("neighbourhood_id") == h["neighbourhood_id"]) & (pl.col("category") == h["category"])
                                & (pl.col("forecast_date") == day))
            usual = hist.filter((pl.col("neighbourhood_id") == h["neighbourhood_id"]) & (pl.col("category") == h["category"])
                                & (pl.col("dow") == day.isoweekday()))["y"]
            if f.is_empty():
                continue
            p50 = float(f["p50"][0]) * h["hub_share"]
            base = float(usual.mean()) * h["hub_share"] if usual.len() else None
            rows.append({"event": e["name"], "date": day, "attendance": int(e["expected_attendance"] or 0),
                         "hub_id": h["hub_id"], "hub": h.get("hub_name") or h["hub_id"], "category": h["category"],
                         "forecast_p50": round(p50, 1), "usual": None if base is None else round(base, 1),
                         "lift_pct": None if not base else round(100 * (p50 - base) / base, 1)})
        if at.is_empty():
            rows.append({"event": e["name"], "date": day, "attendance": int(e["expected_attendance"] or 0),
                         "hub_id": None, "hub": "(no hub in the venue's neighbourhood)", "category": None,
                         "forecast_p50": None, "usual": None, "lift_pct": None})
    return pl.DataFrame(rows)
