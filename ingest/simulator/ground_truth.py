"""Ground truth: what a correct pipeline must find in the landing zone.

Written as Parquet outside the landing zone (devices never drop it):

- `event_counts.parquet`   per contract and generated day: files, rows, bad rows and valid
  distinct events (by natural key) in the files delivered so far;
- `daily_demand.parquet`   per local date × neighbourhood × category (zeros included): units
  and pickups of valid, distinct `locker_pickup` readings delivered so far, and the units
  including readings still in transit (late files due after the last day);
- `hub_daily_demand.parquet` the same per hub;
- `hub_daily_stock.parquet` the true stock per local date × hub × category (the lockers'
  physical state, whatever reached the landing zone): opening units, units returned by the
  morning sweep (uncollected after `stock.HOLD_DAYS` days), deposited, picked up (of which
  served from the depot: shortage) and closing units, and the category's capacity;
- `faults.parquet`         every injected fault: kind, contract, file, line, key, rows, detail;
- `state.json`             the run's parameters and last day, for `--append`.

Truth is kept per generated day, so `--append` recomputes only the days whose late files
it delivers and keeps the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ingest.contracts import TELEMETRY

from .city import City
from .faults import OutFile
from .writers import header_lines, render

STATE_FILE = "state.json"
STATE_VERSION = 1
COUNT_SCHEMA = {
    "contract": pl.String, "gen_date": pl.Date, "files": pl.Int64, "rows": pl.Int64,
    "bad_rows": pl.Int64, "valid_rows": pl.Int64, "valid_distinct": pl.Int64,
}
FAULT_SCHEMA = {
    "kind": pl.String, "contract": pl.String, "file": pl.String, "line": pl.Int64, "key": pl.String,
    "rows": pl.Int64, "detail": pl.String, "gen_date": pl.Date, "delivery_date": pl.Date,
}
DEMAND_SCHEMA = {"date": pl.Date, "hub": pl.Int32, "category": pl.Int32, "units": pl.Int64, "pickups": pl.Int64,
                 "units_incl_pending": pl.Int64}


@dataclass
class DayTruth:
    counts: pl.DataFrame
    faults: pl.DataFrame
    demand: pl.DataFrame  # by hub index × category index


def _key_expr(natural_key: tuple[str, ...]) -> pl.Expr:
    return pl.concat_str([pl.col(k).cast(pl.String) for k in natural_key], separator="|")


def _faults_of(f: OutFile) -> list[dict]:
    if f.refused and f.cut_line is None:
        render(f)  # the cut line is known once the file is rendered
    base = {"contract": f.contract.name, "file": f.relpath, "gen_date": f.gen_day, "delivery_date": f.delivery}
    recs = [
        {**base, "kind": kind, "line": f.cut_line if kind == "truncated_file" else None, "key": None, "rows": n, "detail": detail}
        for kind, detail, n in f.file_faults
    ]
    if f.copy_of is not None:
        return recs  # the rows' own faults are recorded once, on the original
    off = header_lines(f) + 1
    flagged = f.rows.with_row_index("_pos").filter(pl.col("_fault").is_not_null())
    if flagged.height == 0:
        return recs
    flagged = flagged.with_columns(_key=_key_expr(f.contract.natural_key))
    skew = flagged.filter(pl.col("_fault") == "clock_skew")
    if skew.height:
        by_dev = skew.group_by("device_id").agg(
            pl.len().alias("n"), pl.col("_pos").min().alias("first"), (pl.col("_devt") - pl.col("_t")).median().alias("off")
        ).sort("device_id")
        for dev, n, _first, offs in by_dev.iter_rows():
            recs.append({**base, "kind": "clock_skew", "line": None, "key": dev, "rows": n,
                         "detail": f"device clock off by about {int(offs):+d} s on {n} rows"})
    for pos, kind, key in flagged.filter(pl.col("_fault") != "clock_skew").select("_pos", "_fault", "_key").iter_rows():
        recs.append({**base, "kind": kind, "line": pos + off, "key": key, "rows": 1, "detail": None})
    return recs


def day_truth(files: list[OutFile], gen_day: date, last: date, city: City) -> DayTruth:
    """Truth contributed by the files generated on `gen_day`, as delivered up to `last`."""
    counts, faults = [], []
    by_contract: dict[str, list[OutFile]] = {}
    for f in files:
        by_contract.setdefault(f.contract.name, []).append(f)
    demand = None
    for name, fs in by_contract.items():
        contract = fs[0].contract
        delivered = [f for f in fs if f.delivery <= last]
        loaded = [f for f in delivered if not f.refused]
        nk = list(contract.natural_key)
        keys = [f.rows.select(*nk, "_valid") for f in loaded]
        n_rows = sum(k.height for k in keys)
        valid = pl.concat(keys).filter(pl.col("_valid")) if keys else None
        n_valid = valid.height if valid is not None else 0
        counts.append({
            "contract": name, "gen_date": gen_day, "files": len(delivered), "rows": n_rows,
            "bad_rows": n_rows - n_valid, "valid_rows": n_valid,
            "valid_distinct": valid.select(pl.struct(nk).n_unique()).item() if n_valid else 0,
        })
        for f in delivered:
            faults.extend(_faults_of(f))
        if name == TELEMETRY.name:
            demand = _demand(fs, loaded, gen_day, city)
    if demand is None:
        demand = pl.DataFrame(schema=DEMAND_SCHEMA)
    return DayTruth(
        counts=pl.DataFrame(counts, schema=COUNT_SCHEMA),
        faults=pl.DataFrame(faults, schema=FAULT_SCHEMA),
        demand=demand,
    )


def _pickups(fs: list[OutFile]) -> pl.DataFrame:
    cols = ["device_id", "seq", "value", "_hub", "_cat"]
    frames = [f.rows.filter(pl.col("_valid") & (pl.col("kind") == "locker_pickup")).select(cols) for f in fs]
    if not frames:
        return pl.DataFrame(schema={"_hub": pl.Int32, "_cat": pl.Int32, "units": pl.Int64, "pickups": pl.Int64})
    return (
        pl.concat(frames)
        .unique(["device_id", "seq"], keep="first")
        .group_by("_hub", "_cat")
        .agg(pl.col("value").sum().cast(pl.Int64).alias("units"), pl.len().cast(pl.Int64).alias("pickups"))
    )


def _demand(all_files: list[OutFile], loaded: list[OutFile], gen_day: date, city: City) -> pl.DataFrame:
    got = _pickups(loaded)
    everything = [f for f in all_files if not f.refused]
    allp = (got if len(everything) == len(loaded) else _pickups(everything)).rename(
        {"units": "units_incl_pending"}
    ).drop("pickups")
    return (
        allp.join(got, on=["_hub", "_cat"], how="left")
        .select(
            pl.lit(gen_day).alias("date"),
            pl.col("_hub").cast(pl.Int32).alias("hub"),
            pl.col("_cat").cast(pl.Int32).alias("category"),
            pl.col("units").fill_null(0),
            pl.col("pickups").fill_null(0).cast(pl.Int64),
            pl.col("units_incl_pending"),
        )
    )


def _merge(path: Path, new: pl.DataFrame, date_col: str, keep_before: date | None) -> pl.DataFrame:
    if keep_before is None or not path.exists():
        return new
    old = pl.read_parquet(path).filter(pl.col(date_col) < keep_before)
    return pl.concat([old, new], how="vertical_relaxed")


def write_truth(
    truth_dir: Path,
    city: City,
    start: date,
    last: date,
    days: list[DayTruth],
    keep_before: date | None,
    state: dict,
    stock: pl.DataFrame,
) -> dict[str, Path]:
    """Write (or, on append, merge) the truth tables; `keep_before`: first recomputed day.
    `stock`: the true stock of every day from `start` (rebuilt whole on append)."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: truth_dir / f"{k}.parquet" for k in ("event_counts", "daily_demand", "hub_daily_demand", "faults")}
    raw_path = truth_dir / "_demand_by_hub_index.parquet"

    counts = pl.concat([d.counts for d in days]) if days else pl.DataFrame(schema=COUNT_SCHEMA)
    counts = _merge(paths["event_counts"], counts, "gen_date", keep_before).sort("gen_date", "contract")
    faults = pl.concat([d.faults for d in days]) if days else pl.DataFrame(schema=FAULT_SCHEMA)
    faults = _merge(paths["faults"], faults, "gen_date", keep_before).sort(
        "gen_date", "contract", "file", "line", "kind", "key", nulls_last=True
    )
    demand = pl.concat([d.demand for d in days]) if days else pl.DataFrame(schema=DEMAND_SCHEMA)
    demand = _merge(raw_path, demand, "date", keep_before).sort("date", "hub", "category")

    # zero-filled grids: every hub (neighbourhood) × category × day
    n_days = (last - start).days + 1
    dates = pl.date_range(start, last, "1d", eager=True)
    h, c = len(city.hub_ids), len(city.cat_ids)
    grid = pl.DataFrame({
        "date": dates.gather(np.repeat(np.arange(n_days), h * c)),
        "hub": np.tile(np.repeat(np.arange(h, dtype=np.int32), c), n_days),
        "category": np.tile(np.arange(c, dtype=np.int32), n_days * h),
    })
    hub_full = grid.join(demand, on=["date", "hub", "category"], how="left").with_columns(
        pl.col("units", "pickups", "units_incl_pending").fill_null(0)
    )
    hub_ids = pl.Series("hub_id", city.hub_ids)
    nbh_of_hub = pl.Series("neighbourhood_id", city.nbh_ids[city.hub_nbh])
    cats = pl.Series("category_id", city.cat_ids)
    hub_out = pl.DataFrame({
        "date": hub_full["date"],
        "hub_id": hub_ids.gather(hub_full["hub"]),
        "neighbourhood_id": nbh_of_hub.gather(hub_full["hub"]),
        "category": cats.gather(hub_full["category"]),
        "units": hub_full["units"],
        "pickups": hub_full["pickups"],
        "units_incl_pending": hub_full["units_incl_pending"],
    })
    nbh_out = (
        hub_out.group_by("date", "neighbourhood_id", "category", maintain_order=True)
        .agg(pl.col("units", "pickups", "units_incl_pending").sum())
        .sort("date", "neighbourhood_id", "category")
    )
    totals = counts.group_by("contract").agg(pl.col("files", "rows", "bad_rows", "valid_rows", "valid_distinct").sum())

    demand.write_parquet(raw_path)
    counts.write_parquet(paths["event_counts"])
    faults.write_parquet(paths["faults"])
    hub_out.write_parquet(paths["hub_daily_demand"])
    nbh_out.write_parquet(paths["daily_demand"])
    paths["event_totals"] = truth_dir / "event_totals.parquet"
    totals.sort("contract").write_parquet(paths["event_totals"])
    paths["hub_daily_stock"] = truth_dir / "hub_daily_stock.parquet"
    stock.sort("date", "hub_id", "category").write_parquet(paths["hub_daily_stock"])
    state_path = truth_dir / STATE_FILE
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    paths["state"] = state_path
    return paths


def read_state(truth_dir: Path) -> dict:
    path = truth_dir / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"--append needs a previous run's state at {path}; run without --append first")
    state = json.loads(path.read_text())
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"state {path} has version {state.get('version')}, expected {STATE_VERSION}")
    return state


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
