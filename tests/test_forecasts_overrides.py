"""Overrides and sign-off on a real warehouse: operations send back the plan CSV or workbook;
`civicflow plan apply-overrides` and the overrides folder's Dagster job apply it all or
nothing, record who changed what and why, write the dispatched plan and approve the plan;
the next morning scores the model's plan and the dispatched one apart."""

from __future__ import annotations

import csv
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from support.forecast_city import AS_OF, build_city, store_nights
from typer.testing import CliRunner

from forecasts.exports import export_plan, export_xlsx
from forecasts.places import read_places
from forecasts.review import outcome
from pipelines.cli import app
from pipelines.overrides_assets import build_overrides_job, build_overrides_sensor, pending
from pipelines.resources import WarehouseResource

UNITS = "units to stage (units)"


@pytest.fixture()
def home(tmp_path):
    """A home whose warehouse holds the plans of AS_OF-1 and AS_OF, and tonight's plan CSV."""
    root = tmp_path / "home"
    root.mkdir()
    con = build_city(root / "warehouse.duckdb")
    store_nights(con, {AS_OF - timedelta(days=1): 22.0, AS_OF: 26.0})
    plan = con.execute("select * exclude (as_of) from forecasts.staging_plan where as_of = ?", [AS_OF]).pl()
    paths = export_plan(plan, tmp_path / "sent", AS_OF + timedelta(days=1), read_places(con))
    export_xlsx(plan, tmp_path / "sent", AS_OF + timedelta(days=1), read_places(con))
    con.close()
    return root, paths["csv"]


def _edit(src, dst, edits: dict[tuple[str, str, str], tuple[object, str]], extra: list[dict] | None = None):
    """Copy the plan CSV with `edits` {(plan date, hub, category): (units, reason)} and extra rows."""
    rows = list(csv.DictReader(src.open(encoding="utf-8")))
    for r in rows:
        r["reason"] = ""
        key = (r["plan date"], r["hub"], r["category"])
        if key in edits:
            r[UNITS], r["reason"] = edits[key]
    for e in extra or []:
        rows.append({**rows[0], **e})
    with dst.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def _db(root):
    import duckdb

    return duckdb.connect(str(root / "warehouse.duckdb"))


D1 = str(AS_OF + timedelta(days=1))


def test_a_bad_file_is_refused_whole_with_row_and_reason(home, tmp_path):
    root, sent = home
    bad = _edit(sent, tmp_path / "bad.csv", {
        (D1, "H1a", "parcels"): ("25", "street market"),       # valid on its own
        (D1, "H1b", "parcels"): ("-3", "typo"),                # negative
        (D1, "H2", "meds"): ("11", "clinic"),                  # H2 has 10 units of meds space
        (D1, "H2", "parcels"): ("30", ""),                     # no reason
    }, extra=[{"hub": "H9", "plan date": D1, UNITS: "4", "reason": "x"},
              {"plan date": str(AS_OF - timedelta(days=5)), "reason": "old"}])
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(bad), "--home", str(root), "--by", "ana"])
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert "refused" in text and "nothing applied" in text
    # lines 2–9: the plan (two days of four rows); 10 and 11: the extra rows
    for line, why in ((3, "negative (-3)"), (4, "over the hub's space for meds (10)"), (5, "without a reason"),
                      (10, "unknown hub 'H9'"), (11, "stale plan date")):
        assert f"bad.csv line {line}:" in text and why in text, (line, why)
    con = _db(root)
    assert con.execute("select status from forecasts.plan_status where as_of = ?", [AS_OF]).fetchone() == ("proposed",)
    assert con.execute("select count(*) from forecasts.plan_overrides").fetchone() == (0,)
    assert con.execute("select count(*) from forecasts.dispatched_plan").fetchone() == (0,)


def test_a_hub_day_over_the_hubs_total_space_is_refused(home, tmp_path):
    """A hub with a total space across categories (a `hub_capacity` row whose category is
    '*'): raising one category so the day no longer fits is refused with the row, though
    the row fits its own category; moving units between categories within it is applied."""
    root, sent = home
    con = _db(root)
    day = con.execute("""select category, units, capacity_units from forecasts.staging_plan
                         where as_of = ? and plan_date = ? and hub_id = 'H2' order by category""",
                      [AS_OF, AS_OF + timedelta(days=1)]).fetchall()
    planned = {c: u for c, u, _ in day}
    total = sum(planned.values())
    con.execute("insert into marts.hub_capacity values ('H2', 'N2', '*', ?)", [total])
    con.close()
    assert planned["parcels"] + 2 <= dict((c, cap) for c, _, cap in day)["parcels"]  # fits parcels' own space
    over = _edit(sent, tmp_path / "over.csv", {(D1, "H2", "parcels"): (str(planned["parcels"] + 2), "fair")})
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(over), "--home", str(root), "--by", "ana"])
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert "over.csv line 5:" in text and "nothing applied" in text
    assert f"would stage {total + 2} across all categories, over the hub's total space ({total})" in text
    con = _db(root)
    assert con.execute("select status from forecasts.plan_status where as_of = ?", [AS_OF]).fetchone() == ("proposed",)
    assert con.execute("select count(*) from forecasts.plan_overrides").fetchone() == (0,)
    assert con.execute("select count(*) from forecasts.dispatched_plan").fetchone() == (0,)
    con.close()
    swap = _edit(sent, tmp_path / "swap.csv", {(D1, "H2", "parcels"): (str(planned["parcels"] + 1), "fair"),
                                               (D1, "H2", "meds"): (str(planned["meds"] - 1), "clinic shut")})
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(swap), "--home", str(root), "--by", "ana"])
    assert out.exit_code == 0, out.output
    con = _db(root)
    assert con.execute("""select sum(units) from forecasts.dispatched_plan
                          where as_of = ? and plan_date = ? and hub_id = 'H2'""",
                       [AS_OF, AS_OF + timedelta(days=1)]).fetchone() == (total,)


def test_overrides_are_audited_dispatched_and_approved(home, tmp_path):
    root, sent = home
    good = _edit(sent, tmp_path / "ok.csv", {(D1, "H1a", "parcels"): ("25", "street market on Saturday"),
                                             (D1, "H2", "meds"): ("4", "clinic closed")})
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(good), "--home", str(root), "--by", "ana"])
    assert out.exit_code == 0, out.output
    assert f"plan of {AS_OF} approved by ana: 2 change(s)" in " ".join(out.output.split())
    con = _db(root)
    audit = con.execute("""select hub_id, category, units_before, units_after, reason, changed_by, source_line
                           from forecasts.plan_overrides where as_of = ? order by hub_id""", [AS_OF]).fetchall()
    model = dict(con.execute("""select hub_id || category, units from forecasts.staging_plan
                                where as_of = ? and plan_date = ?""", [AS_OF, AS_OF + timedelta(days=1)]).fetchall())
    assert audit == [("H1a", "parcels", model["H1aparcels"], 25, "street market on Saturday", "ana", "line 2"),
                     ("H2", "meds", model["H2meds"], 4, "clinic closed", "ana", "line 4")]
    assert con.execute("select status, changed_by, overrides from forecasts.plan_status where as_of = ?",
                       [AS_OF]).fetchone() == ("approved", "ana", 2)
    total_model = con.execute("select sum(units) from forecasts.staging_plan where as_of = ?", [AS_OF]).fetchone()[0]
    total_sent = con.execute("select sum(units) from forecasts.dispatched_plan where as_of = ?", [AS_OF]).fetchone()[0]
    assert total_sent == total_model - model["H1aparcels"] + 25 - model["H2meds"] + 4
    con.close()
    disp = pl.read_csv(root / "exports" / D1 / "dispatched_plan.csv")
    assert disp[UNITS].sum() == total_sent and "override reason" in disp.columns and "hub name" in disp.columns
    again = CliRunner().invoke(app, ["plan", "apply-overrides", str(good), "--home", str(root), "--by", "ana"])
    assert again.exit_code == 0 and "already applied" in again.output


def test_the_workbook_can_be_sent_back(home, tmp_path):
    from openpyxl import load_workbook

    root, sent = home
    wb = load_workbook(sent.parent / "staging_plan.xlsx")
    ws = wb["Northfield"]
    header = [c.value for c in ws[1]]
    col = {h: i + 1 for i, h in enumerate(header)}
    ws.cell(1, len(header) + 1, "reason")
    row = next(r for r in range(2, ws.max_row) if ws.cell(r, col["hub"]).value == "H1b"
               and str(ws.cell(r, col["plan date"]).value)[:10] == D1)
    ws.cell(row, col[UNITS], 12)
    ws.cell(row, len(header) + 1, "van off the road")
    wb.save(tmp_path / "back.xlsx")
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(tmp_path / "back.xlsx"), "--home", str(root), "--by", "li"])
    assert out.exit_code == 0, out.output
    con = _db(root)
    assert con.execute("select hub_id, units_after, source_line from forecasts.plan_overrides").fetchall() == [
        ("H1b", 12, f"sheet 'Northfield' row {row}")]


def test_next_morning_scores_the_model_and_the_overrides_apart(home, tmp_path):
    root, sent = home
    con = _db(root)
    # approve last night's plan (AS_OF-1, for AS_OF) with H1a raised to its full 40: AS_OF saw 30 pickups there
    prev = con.execute("select * exclude (as_of) from forecasts.staging_plan where as_of = ?", [AS_OF - timedelta(days=1)]).pl()
    con.close()
    p = export_plan(prev, tmp_path / "prev", AS_OF, None)["csv"]
    f = _edit(p, tmp_path / "prev.csv", {(str(AS_OF), "H1a", "parcels"): ("30", "match day")})
    from forecasts import overrides

    con = _db(root)
    overrides.apply(con, f, "ana", as_of=AS_OF - timedelta(days=1))
    o = outcome(con, AS_OF).filter(pl.col("hub_id") == "H1a").row(0, named=True)
    assert o["dispatched"] == 30 and o["staged"] < 30
    assert o["cost_dispatched"] == 0 and o["cost"] == pytest.approx(3.0 * (30 - o["staged"]))
    # the report's "how it went" shows the two apart: the one changed row, the model's cost and the dispatched one
    from forecasts.run import report_from_warehouse

    whole = outcome(con, AS_OF)
    text = report_from_warehouse(con, tmp_path / "exports").read_text()
    model_cost, sent_cost = float(whole["cost"].sum()), float(whole["cost_dispatched"].sum())
    assert sent_cost < model_cost
    assert (f"Operations changed 1 hub × category before dispatch: {int(whole['dispatched'].sum()):,} units were sent. "
            f"Scored apart, the model's plan cost {model_cost:,.2f} EUR and the dispatched plan {sent_cost:,.2f} EUR: "
            f"the overrides saved {model_cost - sent_cost:,.2f} EUR.") in text
    moved = text.split('id="overrides-table"', 1)[1].split("</table>", 1)[0]
    assert "North A" in moved and f">{o['staged']}<" in moved and ">30<" in moved and "North B" not in moved


def test_the_overrides_folder_job_applies_or_refuses_and_moves_the_file(home, tmp_path):
    root, sent = home
    folder = root / "overrides"
    folder.mkdir()
    bad = _edit(sent, folder / "a_bad.csv", {(D1, "H1b", "parcels"): ("-1", "typo")})
    good = _edit(sent, folder / "b_good.csv", {(D1, "H1b", "parcels"): ("5", "road works")})
    job = build_overrides_job(folder, root / "exports")
    sensor = build_overrides_sensor(job, folder)
    requests = sensor(dg.build_sensor_context())
    assert [r.tags["civicflow/overrides"] for r in requests] == ["a_bad.csv", "b_good.csv"]
    resources = {"warehouse": WarehouseResource(home=str(root))}
    r1 = job.execute_in_process(run_config=requests[0].run_config, resources=resources, raise_on_error=False)
    assert not r1.success
    assert (folder / "refused" / "a_bad.csv").exists() and "negative (-1)" in (folder / "refused" / "a_bad.csv.why.txt").read_text()
    r2 = job.execute_in_process(run_config=requests[1].run_config, resources=resources)
    assert r2.success and (folder / "applied" / "b_good.csv").exists() and pending(folder) == []
    con = _db(root)
    assert con.execute("select status from forecasts.plan_status where as_of = ?", [AS_OF]).fetchone() == ("approved",)
    assert con.execute("select units_after, reason from forecasts.plan_overrides").fetchall() == [(5, "road works")]
    assert not bad.exists() and not good.exists()


def test_plan_commands_have_help():
    for args in (["plan", "--help"], ["plan", "apply-overrides", "--help"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0 and "overrides" in out.output, out.output


def test_a_missing_file_is_one_line(home, tmp_path):
    root, _ = home
    out = CliRunner().invoke(app, ["plan", "apply-overrides", str(tmp_path / "nope.csv"), "--home", str(root)])
    assert out.exit_code == 1 and "nope.csv" in out.output and len(out.output.strip().splitlines()) == 1


def test_a_category_over_its_space_across_windows_is_refused():
    """Each window's row fits the category's space, their day's sum does not."""
    from forecasts.overrides import KEYS, OverridesRefused, validate

    day = AS_OF + timedelta(days=1)
    plan = pl.DataFrame({"plan_date": [day, day], "hub_id": ["H2", "H2"], "category": ["meds", "meds"],
                         "window": ["06-12", "12-18"], "units": [4, 4], "capacity_units": [10, 10]})

    def row(win, units):
        return {KEYS["plan_date"]: str(day), KEYS["hub_id"]: "H2", KEYS["category"]: "meds", KEYS["window"]: win,
                KEYS["units"]: str(units), "reason": "clinic"}

    with pytest.raises(OverridesRefused) as err:
        validate("w.csv", [("line 2", row("06-12", 7)), ("line 3", row("12-18", 4))], plan)
    assert err.value.problems == ["w.csv line 2: units to stage (units): H2 meds on "
                                  f"{day} would stage 11 across its windows, over the hub's space for meds (10)"]
    assert len(validate("w.csv", [("line 2", row("06-12", 6)), ("line 3", row("12-18", 4))], plan)) == 1
