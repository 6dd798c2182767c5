"""Overrides and sign-off: operations send back the plan (the CSV or the workbook) with
changed quantities and a reason; the plan becomes the dispatched plan, `approved`.

A night's plan is stored `proposed` (`forecasts.plan_status`). `apply` takes an override
file, and either refuses it whole — every bad row named with its file, line and field: an
unknown hub, category or window, units that are negative, not whole or over the hub's
space (a row over its category's space, a hub × category × day over it summed across
delivery windows, a hub × day over the hub's total space when it has one), a stale plan
date (not tonight's plan), a change without a reason — or, in one
transaction: records each change (who, what, before → after, why, the file and its line,
the file's SHA-256) in `forecasts.plan_overrides`, writes `forecasts.dispatched_plan` (the
plan with the changes) and marks the plan `approved`. Nothing is half-applied. The same
file applied twice is a no-op. A file with no change approves the model's plan as it is.

The file's rows are read under the headers of `staging_plan.csv` (`plan date`, `hub`,
`category`, `delivery window`, `units to stage (units)`) plus a `reason` column; in the
workbook, every sheet with those headers (the neighbourhood sheets; its `Total` row is
skipped). Rows left as planned need no reason.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl

from forecasts.places import HEADERS
from forecasts.planner import TOTAL_CATEGORY
from warehouse.tables import table_exists

PROPOSED, APPROVED = "proposed", "approved"
KEYS = {"plan_date": HEADERS["plan_date"][0], "hub_id": HEADERS["hub_id"][0], "category": HEADERS["category"][0],
        "window": HEADERS["window"][0], "units": HEADERS["units"][0]}
REASON = "reason"

DDL = [
    """create table if not exists forecasts.plan_status (
        as_of DATE, status VARCHAR, changed_by VARCHAR, changed_at TIMESTAMP,
        overrides INTEGER, source_file VARCHAR, file_sha256 VARCHAR)""",
    """create table if not exists forecasts.plan_overrides (
        as_of DATE, plan_date DATE, hub_id VARCHAR, category VARCHAR, "window" VARCHAR,
        units_before BIGINT, units_after BIGINT, reason VARCHAR, changed_by VARCHAR, changed_at TIMESTAMP,
        source_file VARCHAR, source_line VARCHAR, file_sha256 VARCHAR)""",
    """create table if not exists forecasts.dispatched_plan (
        as_of DATE, plan_date DATE, hub_id VARCHAR, neighbourhood_id VARCHAR, category VARCHAR, "window" VARCHAR,
        units BIGINT, model_units BIGINT, override_reason VARCHAR, capacity_units BIGINT,
        under_cost DOUBLE, over_cost DOUBLE)""",
]


class OverridesRefused(ValueError):
    """The file was refused whole; `problems` lists each bad row as `file:line: field: why`."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{path.name} refused, nothing applied ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}): {shown}")


@dataclass(frozen=True)
class Applied:
    as_of: date
    changed: int
    units_before: int
    units_after: int
    status: str
    already_applied: bool = False


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists forecasts")
    for ddl in DDL:
        con.execute(ddl)


def mark_proposed(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    """A newly stored plan is `proposed` (a re-run of the night resets it and its dispatch).
    Runs inside the caller's transaction; the caller has run `ensure_tables`."""
    con.execute("delete from forecasts.plan_status where as_of = ?", [as_of])
    con.execute("delete from forecasts.dispatched_plan where as_of = ?", [as_of])
    con.execute("insert into forecasts.plan_status (as_of, status) values (?, ?)", [as_of, PROPOSED])


def read_rows(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(where, row) for every data row of a CSV or workbook: where = `line N` or `sheet!row N`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True, data_only=True)
        out = []
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True)
            header = [str(h).strip() if h is not None else "" for h in next(rows, ())]
            if not {KEYS["hub_id"], KEYS["units"], KEYS["window"]} <= set(header):
                continue
            for k, values in enumerate(rows, start=2):
                row = dict(zip(header, values))
                if row.get(KEYS["plan_date"]) in (None, "") or str(row.get(KEYS["plan_date"])).strip() == "Total":
                    continue
                out.append((f"sheet {ws.title!r} row {k}", row))
        if not out:
            raise OverridesRefused(path, [f"{path.name}: no sheet with the columns {KEYS['hub_id']!r}, "
                                          f"{KEYS['window']!r} and {KEYS['units']!r}"])
        return out
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [h for h in KEYS.values() if h not in (reader.fieldnames or [])]
        if missing:
            raise OverridesRefused(path, [f"{path.name} line 1: missing column(s) {', '.join(map(repr, missing))}"])
        return [(f"line {k}", row) for k, row in enumerate(reader, start=2)]


def _date(v: object) -> date | None:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v).strip())
    except ValueError:
        return None


def _int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        f = float(str(v).replace(",", "").strip())
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def validate(path: Path, rows: list[tuple[str, dict[str, object]]], plan: pl.DataFrame,
             total_capacity: dict[str, int] | None = None) -> list[dict]:
    """The changes the file asks for (rows whose units differ from the plan), or
    OverridesRefused naming every bad row. `plan`: the night's plan (one as_of);
    `total_capacity`: hub → its total space across categories, for the hubs that have one."""
    name = Path(path).name
    index = {(r["plan_date"], r["hub_id"], r["category"], r["window"]): r for r in plan.iter_rows(named=True)}
    hubs = set(plan["hub_id"].to_list())
    dates = set(plan["plan_date"].to_list())
    problems, changes, seen = [], [], set()
    for where, row in rows:
        def bad(field: str, why: str, where=where) -> None:
            problems.append(f"{name} {where}: {field}: {why}")

        day, hub = _date(row.get(KEYS["plan_date"])), str(row.get(KEYS["hub_id"]) or "").strip()
        cat, win = str(row.get(KEYS["category"]) or "").strip(), str(row.get(KEYS["window"]) or "").strip()
        raw_units = row.get(KEYS["units"])
        units = _int(raw_units)
        if day is None:
            bad(KEYS["plan_date"], f"not a date: {row.get(KEYS['plan_date'])!r}")
            continue
        if day not in dates:
            bad(KEYS["plan_date"], f"stale plan date {day}: tonight's plan covers {min(dates)} to {max(dates)}")
            continue
        if hub not in hubs:
            bad(KEYS["hub_id"], f"unknown hub {hub!r}")
            continue
        key = (day, hub, cat, win)
        planned = index.get(key)
        if planned is None:
            bad(f"{KEYS['category']}/{KEYS['window']}", f"no {cat!r} in window {win!r} at {hub} on {day} in the plan")
            continue
        if key in seen:
            bad(KEYS["hub_id"], f"{hub} {cat} {win} {day} appears twice")
            continue
        seen.add(key)
        if units is None:
            bad(KEYS["units"], f"not a whole number: {raw_units!r}")
            continue
        if units < 0:
            bad(KEYS["units"], f"negative ({units})")
            continue
        cap = planned["capacity_units"]
        if cap is not None and units > cap:
            bad(KEYS["units"], f"{units} is over the hub's space for {cat} ({cap})")
            continue
        if units == planned["units"]:
            continue
        reason = str(row.get(REASON) or "").strip()
        if not reason:
            bad(REASON, f"units changed {planned['units']} → {units} without a reason")
            continue
        changes.append({"plan_date": day, "hub_id": hub, "category": cat, "window": win,
                        "units_before": int(planned["units"]), "units_after": units, "reason": reason,
                        "source_line": where})
    problems += _over_day_space(name, plan, changes, total_capacity or {})
    if problems:
        raise OverridesRefused(Path(path), problems)
    return changes


def _over_day_space(name: str, plan: pl.DataFrame, changes: list[dict], total_capacity: dict[str, int]) -> list[str]:
    """The changed rows that push a day over its space once the changes are in: a hub ×
    category summed across its delivery windows over the category's space, or a hub's day
    summed across categories over the hub's total space. Each raising row at such a
    day is named (a row that lowers units cannot be the cause)."""
    if not changes:
        return []
    keys = ["plan_date", "hub_id", "category", "window"]
    ch = pl.DataFrame(changes).select(*keys, "units_after", "source_line")
    after = (plan.join(ch, on=keys, how="left")
             .with_columns(pl.coalesce("units_after", "units").alias("after")))
    by_cat = (after.group_by("plan_date", "hub_id", "category")
              .agg(pl.col("after").sum().alias("total"), pl.col("capacity_units").first().alias("cap"))
              .filter(pl.col("cap").is_not_null() & (pl.col("total") > pl.col("cap"))))
    by_hub = (after.group_by("plan_date", "hub_id").agg(pl.col("after").sum().alias("total"))
              .with_columns(pl.col("hub_id").replace_strict(total_capacity, default=None, return_dtype=pl.Int64).alias("cap"))
              .filter(pl.col("cap").is_not_null() & (pl.col("total") > pl.col("cap"))))
    raised = [c for c in changes if c["units_after"] > c["units_before"]]
    problems = []
    for r in by_cat.iter_rows(named=True):
        for c in raised:
            if (c["plan_date"], c["hub_id"], c["category"]) == (r["plan_date"], r["hub_id"], r["category"]):
                problems.append(f"{name} {c['source_line']}: {KEYS['units']}: {r['hub_id']} {r['category']} on "
                                f"{r['plan_date']} would stage {r['total']} across its windows, over the hub's "
                                f"space for {r['category']} ({r['cap']})")
    for r in by_hub.iter_rows(named=True):
        for c in raised:
            if (c["plan_date"], c["hub_id"]) == (r["plan_date"], r["hub_id"]):
                problems.append(f"{name} {c['source_line']}: {KEYS['units']}: {r['hub_id']} on {r['plan_date']} would "
                                f"stage {r['total']} across all categories, over the hub's total space ({r['cap']})")
    return problems


def total_capacity(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """hub → its total space across categories (a `marts.hub_capacity` row whose category
    is NULL or '*'), for the hubs that have one."""
    if not table_exists(con, "marts", "hub_capacity"):
        return {}
    rows = con.execute("""select hub_id, min(capacity_units) from marts.hub_capacity
                          where (category is null or category = ?) and capacity_units is not null
                          group by hub_id""", [TOTAL_CATEGORY]).fetchall()
    return {h: int(c) for h, c in rows}


def apply(con: duckdb.DuckDBPyConnection, path: Path, changed_by: str, as_of: date | None = None,
          now: datetime | None = None) -> Applied:
    """Validate `path` against the plan of `as_of` (default: the latest) and apply it in one
    transaction (see the module docstring). Raises OverridesRefused, nothing written."""
    path = Path(path)
    if not changed_by.strip():
        raise OverridesRefused(path, ["who changed the plan is required (--by)"])
    ensure_tables(con)
    as_of = as_of or con.execute("select max(as_of) from forecasts.staging_plan").fetchone()[0]
    if as_of is None:
        raise OverridesRefused(path, ["there is no staging plan in the warehouse to override"])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    status = con.execute("select status, file_sha256 from forecasts.plan_status where as_of = ?", [as_of]).fetchone()
    if status and status[1] == sha:
        n = con.execute("select count(*) from forecasts.plan_overrides where as_of = ? and file_sha256 = ?",
                        [as_of, sha]).fetchone()[0]
        return Applied(as_of, int(n), 0, 0, status[0], already_applied=True)
    plan = con.execute("""select plan_date, hub_id, neighbourhood_id, category, "window", units, capacity_units,
                                 under_cost, over_cost
                          from forecasts.staging_plan where as_of = ? order by all""", [as_of]).pl()
    changes = validate(path, read_rows(path), plan, total_capacity(con))
    now = now or datetime.now().replace(microsecond=0)
    ch = pl.DataFrame(changes, schema={"plan_date": pl.Date, "hub_id": pl.String, "category": pl.String,
                                       "window": pl.String, "units_before": pl.Int64, "units_after": pl.Int64,
                                       "reason": pl.String, "source_line": pl.String})
    dispatched = (plan.join(ch.select("plan_date", "hub_id", "category", "window", "units_after", "reason"),
                            on=["plan_date", "hub_id", "category", "window"], how="left")
                  .select(pl.lit(as_of).alias("as_of"), "plan_date", "hub_id", "neighbourhood_id", "category", "window",
                          pl.coalesce("units_after", "units").alias("units"), pl.col("units").alias("model_units"),
                          pl.col("reason").alias("override_reason"), "capacity_units", "under_cost", "over_cost"))
    con.execute("begin transaction")
    try:
        con.execute("delete from forecasts.plan_overrides where as_of = ?", [as_of])
        if ch.height:
            con.register("_cf_ch", ch.with_columns(
                pl.lit(as_of).alias("as_of"), pl.lit(changed_by).alias("changed_by"), pl.lit(now).alias("changed_at"),
                pl.lit(str(path)).alias("source_file"), pl.lit(sha).alias("file_sha256")).to_arrow())
            con.execute("insert into forecasts.plan_overrides by name select * from _cf_ch")
            con.unregister("_cf_ch")
        con.execute("delete from forecasts.dispatched_plan where as_of = ?", [as_of])
        con.register("_cf_disp", dispatched.to_arrow())
        con.execute("insert into forecasts.dispatched_plan by name select * from _cf_disp")
        con.unregister("_cf_disp")
        con.execute("delete from forecasts.plan_status where as_of = ?", [as_of])
        con.execute("insert into forecasts.plan_status values (?, ?, ?, ?, ?, ?, ?)",
                    [as_of, APPROVED, changed_by, now, ch.height, str(path), sha])
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return Applied(as_of, ch.height, int(ch["units_before"].sum()) if ch.height else 0,
                   int(ch["units_after"].sum()) if ch.height else 0, APPROVED)


def dispatched_frame(con: duckdb.DuckDBPyConnection, as_of: date) -> pl.DataFrame:
    """The dispatched plan of `as_of` (machine names), empty when not approved yet."""
    ensure_tables(con)
    return con.execute("""select plan_date, hub_id, neighbourhood_id, category, "window", units, model_units,
                                 override_reason, capacity_units
                          from forecasts.dispatched_plan where as_of = ? order by all""", [as_of]).pl()


def export_dispatched(con: duckdb.DuckDBPyConnection, as_of: date, exports_dir: Path) -> Path:
    """`<exports_dir>/<first plan day>/dispatched_plan.csv`: the approved plan under the
    people's headers, with the model's units and the override's reason beside each row."""
    from forecasts.exports import atomic_write
    from forecasts.places import for_people, read_places

    disp = dispatched_frame(con, as_of)
    if disp.is_empty():
        raise OverridesRefused(Path(str(as_of)), [f"the plan of {as_of} is not approved: nothing dispatched"])
    out_dir = Path(exports_dir) / str(disp["plan_date"].min())
    out_dir.mkdir(parents=True, exist_ok=True)
    people = for_people(disp, read_places(con))
    path = out_dir / "dispatched_plan.csv"
    atomic_write(path, lambda p: people.write_csv(p))
    return path
