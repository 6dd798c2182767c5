"""The operations report: one self-contained HTML file per plan date.

Opens with no network and no script: the charts and the map are inline SVG (`svg.py`; plotly.js
alone would be 3.6 MB, over twice the 1.5 MB budget). Printable: print CSS hides the index,
keeps each chart and table row whole. Deterministic bytes: fixed ids (`chart-<hub>`), no
timestamps, rows in a fixed order, numbers rounded — re-rendering the same day gives the
same file.

Sections, in the order an operations person needs them (the index at the top links them):
1. overview — the city's units to stage, the headline saving, the map, every hub at a glance;
2. events in the horizon and how sure the forecast is, in words;
3. what changed against last night's plan (with the main reason), how last night's plan
   went, the rolling 28-day scorecard;
4. one compact chart per hub (last weeks, forecast and its range, units to stage);
5. how good the forecasts are (backtest) and what the plan saves (cost simulation);
6. the plan of the first day (hub, category, window, units, forecast and its 10–90 %
   range, why capped); the other days and rows with 0 units are in the CSV / xlsx.
"""

from __future__ import annotations

import html
from datetime import date, timedelta

import polars as pl

HISTORY_DAYS = 28
OUTLOOK_SHOWN = 12  # uncertainty sentences shown before the fold
WINDOW_ORDER = ("night", "morning", "afternoon", "evening", "day")

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933;max-width:1200px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;margin-top:32px;border-bottom:2px solid #e4e7eb;padding-bottom:4px}
.sub{color:#52606d;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #cbd2d9;border-radius:8px;padding:10px 16px;min-width:150px;background:#f5f7fa}
.card .v{font-size:24px;font-weight:600} .card .l{color:#52606d;font-size:13px}
table{border-collapse:collapse;font-size:14px;margin:8px 0}
th,td{border-bottom:1px solid #e4e7eb;padding:3px 8px;text-align:right} th{background:#f5f7fa;position:sticky;top:0}
nav.index{background:#f5f7fa;border:1px solid #e4e7eb;border-radius:8px;padding:8px 14px;font-size:14px}
nav.index a{margin-right:12px} .hubs{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:6px 18px}
.up{color:#1e7b34} .down{color:#c92a2a}
@media print{body{margin:0;max-width:none;font-size:11px} nav.index{display:none} th{position:static}
 h2{break-after:avoid} svg,tr,.card{break-inside:avoid} .hubs{display:block} a{color:inherit;text-decoration:none}}
td.t,th.t{text-align:left} td.t{white-space:nowrap} tr.capped td{background:#fff4e5}
.note{color:#52606d;font-size:13px;max-width:900px}
.good{color:#1e7b34;font-weight:600} .warn{color:#b44d12;font-weight:600}
"""


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v))


def _fmt(v: object, nd: int = 1) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return _e(v)


def _table(df: pl.DataFrame, cols: list[tuple[str, str, int]], row_class=None, table_id: str = "") -> str:
    """cols: (column, header, decimals; -1 = text)."""
    head = "".join(f'<th class="{"t" if nd < 0 else ""}">{_e(h)}</th>' for _, h, nd in cols)
    body = []
    for r in df.iter_rows(named=True):
        cls = f' class="{row_class(r)}"' if row_class and row_class(r) else ""
        tds = "".join(f'<td class="t">{_e(r.get(c))}</td>' if nd < 0 else f"<td>{_fmt(r.get(c), nd)}</td>"
                      for c, _, nd in cols)
        body.append(f"<tr{cls}>{tds}</tr>")
    tid = f' id="{table_id}"' if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"



def _signed(v: object) -> str:
    if v is None:
        return ""
    cls = "up" if v > 0 else "down" if v < 0 else ""
    return f'<span class="{cls}">{v:+,}</span>' if v else "0"


def _names(df: pl.DataFrame, places: pl.DataFrame | None) -> pl.DataFrame:
    """`df` (with hub_id) with hub_name, hub_address, lat, lon (the hub's) and
    neighbourhood_name, the names falling back to the ids."""
    if df.is_empty() or "hub_name" in df.columns:
        return df
    cols = {"hub_name": pl.String, "hub_address": pl.String, "lat": pl.Float64, "lon": pl.Float64,
            "neighbourhood_name": pl.String}
    if places is not None and not places.is_empty():
        df = df.join(places.select("hub_id", *(c for c in cols if c in places.columns)), on="hub_id", how="left")
    df = df.with_columns(pl.lit(None, t).alias(c) for c, t in cols.items() if c not in df.columns)
    nb = pl.col("neighbourhood_id") if "neighbourhood_id" in df.columns else pl.col("hub_id")
    return df.with_columns(pl.col("hub_name").fill_null(pl.col("hub_id")), pl.col("neighbourhood_name").fill_null(nb))


def _overview(plan: pl.DataFrame, first_day: pl.DataFrame, value: pl.DataFrame, plan_date: date) -> str:
    from forecasts.narrative import headline

    capped = plan.filter(pl.col("cap_reason").is_not_null()) if plan.height else plan
    cards = [f'<div class="card"><div class="v" id="total-units">{int(first_day["units"].sum()) if first_day.height else 0:,}'
             f'</div><div class="l">units to stage on {plan_date}</div></div>',
             f'<div class="card"><div class="v">{plan["hub_id"].n_unique() if plan.height else 0}</div>'
             f'<div class="l">hubs</div></div>',
             f'<div class="card"><div class="v">{capped.select("hub_id", "category").unique().height if capped.height else 0}'
             f'</div><div class="l">hub × category capped by capacity</div></div>']
    for k, text in enumerate(headline(value)):
        pct, rest = text.split(" ", 1)[0], text.split(" fulfilment cost than ", 1)[1]
        cards.append(f'<div class="card" id="headline-{k}"><div class="v">{_e(pct)} %</div>'
                     f'<div class="l">fulfilment cost saved vs {_e(rest)} (backtest)</div></div>')
    out = '<div class="cards">' + "".join(cards) + "</div>"
    if first_day.height:
        tot = first_day.group_by("category").agg(pl.col("units").sum()).sort("category")
        out += f"<p>Units per category on {plan_date}: " + ", ".join(
            f"<b>{_e(c)}</b> {int(u):,}" for c, u in tot.iter_rows()) + ".</p>"
    return out


def _glance(first_day: pl.DataFrame, changes: pl.DataFrame | None, plan_date: date) -> str:
    cats = sorted(first_day["category"].unique().to_list())
    glance = (first_day.group_by("hub_id", "hub_name", "hub_address", "neighbourhood_name", "category")
              .agg(pl.col("units").sum())
              .pivot(on="category", index=["hub_id", "hub_name", "hub_address", "neighbourhood_name"], values="units")
              .sort("hub_name", "hub_id"))
    for c in cats:
        if c not in glance.columns:
            glance = glance.with_columns(pl.lit(0).alias(c))
    glance = glance.with_columns(pl.sum_horizontal(*[pl.col(c).fill_null(0) for c in cats]).alias("_total"))
    cols = [("hub_name", "hub", -1), ("hub_address", "address", -1), ("neighbourhood_name", "neighbourhood", -1),
            *[(c, c, 0) for c in cats], ("_total", "total", 0)]
    if changes is not None and not changes.is_empty():
        ch = changes.group_by("hub_id").agg(pl.col("change").sum().alias("_change"))
        glance = glance.join(ch, on="hub_id", how="left")
        cols.append(("_change", "vs last night", 0))
    cols.append(("hub_id", "hub id", -1))
    capped_hubs = set(first_day.filter(pl.col("cap_reason").is_not_null())["hub_id"].to_list())
    return (f'<h2 id="glance">{plan_date} at a glance: units per hub</h2>'
            '<p class="note">All windows together; hubs shaded orange have at least one capped category.</p>'
            + _table(glance, cols, lambda r: "capped" if r["hub_id"] in capped_hubs else "", table_id="glance-table"))


def _map(first_day: pl.DataFrame, places: pl.DataFrame | None, changes: pl.DataFrame | None) -> str:
    from forecasts.svg import city_map

    if places is None or places.is_empty() or first_day.is_empty():
        return '<p class="note">No hub places in the warehouse: no map.</p>'
    nbs = (places.select("neighbourhood_id", pl.col("neighbourhood_name").alias("name"),
                         pl.col("neighbourhood_lat").alias("lat"), pl.col("neighbourhood_lon").alias("lon"))
           .unique().sort("neighbourhood_id").to_dicts())
    hubs = (first_day.group_by("hub_id", "hub_name", "neighbourhood_id", "lat", "lon")
            .agg(pl.col("units").sum(), pl.col("capacity_units").sum().alias("cap"),
                 (pl.col("units") / pl.col("capacity_units")).max().alias("pressure"))
            .sort("hub_id"))
    by_change = changes is not None and not changes.is_empty()
    if by_change:
        hubs = hubs.join(changes.group_by("hub_id").agg(pl.col("change").sum()), on="hub_id", how="left")
    what = ("coloured by the change against last night's plan" if by_change
            else "coloured by capacity pressure (the fullest category's units to stage against its space)")
    return (f'<h2 id="map">Where: hubs over the neighbourhoods</h2><p class="note">Grey discs: neighbourhood '
            f"centroids (marts.dim_neighbourhoods); circles: their hubs where they stand (marts.dim_hubs), area by units "
            f"to stage (smaller where hubs stand close), {what}. "
            "Drawn from the coordinates; no map tiles.</p>" + city_map(nbs, hubs.to_dicts(), by_change))


def _changes(changes: pl.DataFrame | None, places: pl.DataFrame | None, plan_date: date) -> str:
    out = [f'<h2 id="changes">What changed since last night\'s plan ({plan_date})</h2>']
    if changes is None or changes.is_empty():
        return out[0] + '<p class="note">No plan from the night before to compare with.</p>'
    ch = _names(changes, places)
    moved = ch.filter((pl.col("change") != 0) | pl.col("change").is_null()).sort("hub_name", "category")
    up = int(ch["change"].fill_null(0).clip(lower_bound=0).sum())
    down = int(-ch["change"].fill_null(0).clip(upper_bound=0).sum())
    reasons = moved.group_by("reason").len().sort("reason")
    out.append(f'<p id="changes-summary">Tonight {int(ch["units"].sum()):,} units against {int(ch["units_yesterday"].fill_null(0).sum()):,} '
               f"in last night's plan for the same day: +{up:,} / −{down:,} over {moved.height} hub × category"
               + (" (" + ", ".join(f"{n} {_e(r)}" for r, n in reasons.iter_rows()) + ")" if moved.height else "")
               + ".</p>")
    if moved.height:
        html_rows = []
        for r in moved.iter_rows(named=True):
            html_rows.append(f'<tr><td class="t">{_e(r["hub_name"])}</td><td class="t">{_e(r["neighbourhood_name"])}</td>'
                             f'<td class="t">{_e(r["category"])}</td><td>{_fmt(r["units_yesterday"])}</td>'
                             f'<td>{r["units"]:,}</td><td>{_signed(r["change"])}</td><td class="t">{_e(r["reason"])}</td>'
                             f'<td class="t">{_e(r["why"])}</td></tr>')
        out.append('<table id="changes-table"><thead><tr><th class="t">hub</th><th class="t">neighbourhood</th>'
                   '<th class="t">category</th><th>last night</th><th>tonight</th><th>+/−</th><th class="t">main reason</th>'
                   f'<th class="t">why</th></tr></thead><tbody>{"".join(html_rows)}</tbody></table>')
    return "".join(out)


def _how_it_went(outcome: pl.DataFrame | None, scorecard: pl.DataFrame | None, places: pl.DataFrame | None,
                 as_of: date) -> str:
    out = [f'<h2 id="how-it-went">How last night\'s plan went ({as_of})</h2>']
    if outcome is None or outcome.is_empty():
        out.append('<p class="note">No plan for this day from the night before, or no pickups recorded yet.</p>')
    else:
        o = _names(outcome, places)
        staged, dem = int(o["staged"].sum()), float(o["demand"].sum())
        short, back, cost = float(o["units_short"].sum()), float(o["hauled_back"].sum()), float(o["cost"].sum())
        served = dem - short
        out.append(f'<p id="outcome-summary">The model\'s plan staged {staged:,} units for {dem:,.0f} picked up: {short:,.0f} short '
                   f"(sent from the depot), {back:,.0f} hauled back, {100 * served / dem if dem else 100:.1f} % "
                   f"of demand served from the hubs, cost {cost:,.2f} EUR.</p>")
        # the model and operations' overrides are scored apart: what the model proposed and what was sent
        moved = o.filter(pl.col("dispatched") != pl.col("staged"))
        sent_cost = float(o["cost_dispatched"].sum())
        if moved.height:
            out.append(f'<p id="outcome-overrides">Operations changed {moved.height} hub × category before dispatch: '
                       f'{int(o["dispatched"].sum()):,} units were sent. Scored apart, the model\'s plan cost '
                       f"{cost:,.2f} EUR and the dispatched plan {sent_cost:,.2f} EUR: the overrides "
                       f"{'saved' if sent_cost < cost else 'cost'} {abs(cost - sent_cost):,.2f} EUR.</p>")
            out.append(_table(moved.sort("hub_name", "category"),
                              [("hub_name", "hub", -1), ("category", "category", -1), ("staged", "model", 0),
                               ("dispatched", "dispatched", 0), ("demand", "picked up", 0),
                               ("cost", "model's cost (EUR)", 2), ("cost_dispatched", "dispatched cost (EUR)", 2)],
                              table_id="overrides-table"))
        else:
            out.append('<p id="outcome-overrides" class="note">No override: the plan dispatched was the model\'s.</p>')
        worst = o.filter((pl.col("units_short") > 0) | (pl.col("hauled_back") > 0)).sort(
            "cost", "hub_name", "category", descending=[True, False, False]).head(15)
        if worst.height:
            out.append('<p class="note">The 15 costliest hub × category (all rows in how_it_went.csv):</p>')
            out.append(_table(worst, [("hub_name", "hub", -1), ("category", "category", -1), ("staged", "staged", 0),
                                      ("demand", "picked up", 0), ("units_short", "short", 0),
                                      ("hauled_back", "hauled back", 0), ("service_level", "service level", 2),
                                      ("cost", "cost (EUR)", 2)], table_id="outcome-table"))
    out.append('<h2 id="scorecard">Scorecard: the last 28 days</h2>')
    if scorecard is None or scorecard.is_empty():
        out.append('<p class="note">No scored day yet (a day is scored once it had a plan and its pickups are in).</p>')
        return "".join(out)
    last = scorecard.row(-1, named=True)

    def pct(v):
        return "–" if v is None else f"{100 * v:.0f} %"

    out.append(f'<p id="scorecard-summary">Over the {last["days_scored"]} days scored, the model\'s plans cost '
               f'{last["rolling_civicflow"]:,.0f} EUR in units short and hauled back; staging yesterday\'s demand would '
               f'have cost {last["rolling_yesterday"]:,.0f} EUR ({pct(last["rolling_saving_vs_yesterday"])} saved) and '
               f'staging nothing {last["rolling_reactive"]:,.0f} EUR ({pct(last["rolling_saving_vs_reactive"])} saved). '
               f'The plans as dispatched, after operations\' overrides, cost {last["rolling_dispatched"]:,.0f} EUR.</p>')
    sc = scorecard.sort("day", descending=True).with_columns(
        (pl.col("rolling_saving_vs_yesterday") * 100).alias("sy"), (pl.col("rolling_saving_vs_reactive") * 100).alias("sr"))
    out.append(_table(sc, [("day", "day", -1), ("demand", "picked up", 0), ("cost_civicflow", "model's plan (EUR)", 0),
                           ("cost_dispatched", "dispatched (EUR)", 0),
                           ("cost_yesterday", "yesterday's demand (EUR)", 0), ("cost_reactive", "reactive (EUR)", 0),
                           ("sy", "28-day saving vs yesterday (%)", 1), ("sr", "vs reactive (%)", 1)],
                      table_id="scorecard-table"))
    return "".join(out)


def _hub_charts(plan: pl.DataFrame, history: pl.DataFrame, as_of: date, plan_date: date) -> str:
    from forecasts.svg import hub_chart

    out = ['<h2 id="hubs">Per hub: the last weeks, the forecast and the units to stage</h2>'
           '<p class="note">One row per category, in units per day at this hub (the hub\'s share of its '
           "neighbourhood). Grey line: demand of the last 4 weeks. Orange dot: the forecast median; its whisker spans "
           "the 10–90 % range (8 days in 10 fall inside). Green bar: units to stage (all windows). The number at the "
           "left of a row is its scale's top.</p><div class=\"hubs\">"]
    hist_start = as_of - timedelta(days=HISTORY_DAYS - 1)
    plan_days = sorted(plan["plan_date"].unique().to_list())
    days = [hist_start + timedelta(days=k) for k in range(HISTORY_DAYS)] + plan_days
    daily = (plan.group_by("plan_date", "hub_id", "hub_name", "hub_address", "neighbourhood_id", "category")
             .agg(pl.col("units").sum(), pl.col("hub_share").first(), pl.col("p10").sum(),
                  pl.col("forecast_p50").sum(), pl.col("p90").sum()))
    hist = history.filter(pl.col("ds") >= hist_start)
    for (hub_id, name, address), d in sorted(daily.group_by("hub_id", "hub_name", "hub_address"),
                                             key=lambda kv: (kv[0][1], kv[0][0])):
        nb = d["neighbourhood_id"][0]
        rows = []
        for cat in sorted(d["category"].unique().to_list()):
            c = d.filter(pl.col("category") == cat).sort("plan_date")
            share = float(c["hub_share"][0])
            h = hist.filter((pl.col("neighbourhood_id") == nb) & (pl.col("category") == cat))
            rows.append({"category": cat, "history": {r["ds"]: round(r["y"] * share, 2) for r in h.iter_rows(named=True)},
                         "plan": {r["plan_date"]: (int(r["units"]), r["p10"], r["forecast_p50"], r["p90"])
                                  for r in c.iter_rows(named=True)}})
        title = (f"{name} ({hub_id})" if name != hub_id else hub_id) + (f" · {address}" if address else "")
        out.append(hub_chart(hub_id, title, rows, days, plan_date))
    out.append("</div>")
    return "".join(out)


def _quality(metrics: pl.DataFrame, value: pl.DataFrame, calibration_source: str) -> str:
    parts = ['<h2 id="quality">How good are the forecasts? (rolling-origin backtest)</h2>']
    if metrics.height:
        m = metrics.filter(pl.col("kind") == "*") if "kind" in metrics.columns else metrics
        parts.append('<p class="note">MASE: mean absolute error relative to a same-weekday-last-week forecast '
                     "on the training data (below 1 = better than that). Coverage: share of days at or below the "
                     "forecast quantile — p80 should be near 0.80.</p>")
        parts.append(_table(m, [("method", "method", -1), ("n_series", "series", 0), ("mase", "MASE", 3),
                                ("mase_vs_naive", "MASE vs seasonal naive", 3), ("pinball", "pinball loss", 3),
                                ("cov_p10", "cov p10", 2), ("cov_p50", "cov p50", 2), ("cov_p80", "cov p80", 2),
                                ("cov_p90", "cov p90", 2), ("cov_p95", "cov p95", 2),
                                ("mae_event", "MAE event days", 2), ("mae_non_event", "MAE other days", 2)],
                            table_id="backtest-table"))
        if calibration_source:
            parts.append(f'<p class="note">Intervals calibrated with: {_e(calibration_source)}.</p>')
    else:
        parts.append('<p class="note">No backtest stored yet (run <code>civicflow forecast backtest</code> '
                     "or the weekly backtest): intervals come from each series' own in-sample errors.</p>")
    parts.append('<h2 id="value">What does the plan save? (cost simulation on the backtest days)</h2>')
    if value.height:
        parts.append('<p class="note">Each unit short is sent from the central depot (the category\'s '
                     "under-staging cost), each unit staged but not picked up is hauled back (over-staging cost); "
                     "a staged unit that is picked up costs nothing extra. Reduction = civicflow's saving against "
                     "each policy, with a 95 % bootstrap interval over days.</p>")
        v = value.with_columns(
            (pl.col("civicflow_reduction") * 100).alias("red_pct"),
            (pl.col("reduction_ci_low") * 100).alias("lo_pct"), (pl.col("reduction_ci_high") * 100).alias("hi_pct"))
        parts.append(_table(v, [("policy", "policy", -1), ("days", "days", 0), ("demand_units", "demand", 0),
                                ("staged_units", "staged", 0), ("units_short", "short", 0),
                                ("units_excess", "excess", 0), ("cost", "cost (EUR)", 0),
                                ("red_pct", "civicflow saves (%)", 1), ("lo_pct", "95 % low", 1),
                                ("hi_pct", "95 % high", 1)], table_id="value-table"))
    else:
        parts.append('<p class="note">No cost simulation stored yet.</p>')
    return "".join(parts)


def _plan_table(first_day: pl.DataFrame, plan: pl.DataFrame, plan_date: date) -> str:
    parts = [f'<h2 id="plan">The plan for {plan_date}</h2><p class="note">units = what to have at the hub at the start '
             "of the window. The forecast columns are the hub's share of its neighbourhood's demand. Rows shaded "
             "orange were cut by a capacity cap (<i>hub_capacity</i>: the category's space at the hub; "
             "<i>hub_total_capacity</i>: the hub's total space, given to the categories that cost most to miss).</p>"]
    cols = [("hub_name", "hub", -1), ("neighbourhood_name", "neighbourhood", -1), ("category", "category", -1),
            ("window", "window", -1), ("units", "units", 0), ("forecast_p50", "forecast (median)", 1),
            ("p10", "low (10 %)", 1), ("p90", "high (90 %)", 1), ("quantile", "service level", 2),
            ("capacity_units", "capacity", 0), ("cap_reason", "capped by", -1), ("hub_id", "hub id", -1)]
    cols = [c for c in cols if c[0] in first_day.columns]
    shown = first_day.filter((pl.col("units") > 0) | pl.col("cap_reason").is_not_null()) if first_day.height else first_day
    left = plan.height - shown.height
    if left:
        parts.append(f'<p class="note">{left:,} rows (the later days, and rows with 0 units) are in '
                     "staging_plan.csv / .xlsx.</p>")
    parts.append(_table(shown, cols, lambda r: "capped" if r.get("cap_reason") else "", table_id="plan-table"))
    return "".join(parts)


def render(
    plan: pl.DataFrame,
    forecast: pl.DataFrame,
    history: pl.DataFrame,
    metrics: pl.DataFrame,
    value: pl.DataFrame,
    as_of: date,
    plan_date: date,
    calibration_source: str = "",
    events: pl.DataFrame | None = None,
    places: pl.DataFrame | None = None,
    changes: pl.DataFrame | None = None,
    outcome: pl.DataFrame | None = None,
    scorecard: pl.DataFrame | None = None,
    pick_lists: str | None = None,
) -> str:
    """The whole report as one HTML string (pure: same inputs, same bytes). `events`
    (marts.dim_events), `places` (hub and neighbourhood names), `changes`, `outcome` and
    `scorecard` (review.py) are optional; `pick_lists` is the folder (relative to the
    report) holding the pick lists, linked from the index."""
    from forecasts.narrative import events_in_horizon, hub_outlook

    plan = _names(plan, places) if plan.height else plan
    if plan.height and "window" in plan.columns:  # windows in the order of the day
        rank = {n: i for i, n in enumerate(WINDOW_ORDER)}
        plan = (plan.with_columns(pl.col("window").replace_strict(rank, default=len(rank)).alias("_w"))
                .sort("plan_date", "hub_name", "hub_id", "category", "_w").drop("_w"))
    first_day = plan.filter(pl.col("plan_date") == plan_date) if plan.height else plan
    index = [("overview", "overview"), ("map", "map"), ("glance", "every hub"), ("events", "events"),
             ("uncertainty", "how sure"), ("changes", "what changed"), ("how-it-went", "how it went"),
             ("scorecard", "28-day scorecard"), ("hubs", "charts per hub"), ("quality", "forecast quality"),
             ("value", "savings"), ("plan", "the plan")]
    nav = " ".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in index)
    if pick_lists and first_day.height:
        from forecasts.picklist import safe_name

        hubs = first_day.select("hub_id", "hub_name").unique().sort("hub_name", "hub_id")
        nav += (f'<br>Pick lists: <a id="pick-lists-all" href="{_e(pick_lists)}/all.html">all hubs (print)</a> · '
                + " · ".join(f'<a class="pick-list" href="{_e(pick_lists)}/{_e(safe_name(h))}.html">{_e(n)}</a>'
                             for h, n in hubs.iter_rows()))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>civicflow staging plan {plan_date}</title><style>{CSS}</style></head><body>",
             f"<h1>Staging plan for {plan_date}</h1>"
             f'<p class="sub">Forecast from demand up to {as_of}. Units to pre-stage per hub, category and '
             f"delivery window. Generated by civicflow.</p>",
             f'<nav class="index" id="index">{nav}</nav>',
             '<h2 id="overview">Overview</h2>', _overview(plan, first_day, value, plan_date),
             _map(first_day, places, changes)]
    if first_day.height:
        parts.append(_glance(first_day, changes, plan_date))
    ev = events_in_horizon(events, plan, forecast, history)
    parts.append('<h2 id="events">Events in the plan horizon</h2>')
    if ev.height:
        parts.append('<p class="note">Lift: the forecast median that day at each hub of the venue\'s neighbourhood '
                     "against the mean of the same weekday over the last 4 weeks.</p>")
        parts.append(_table(ev, [("event", "event", -1), ("date", "day", -1), ("attendance", "expected attendance", 0),
                                 ("hub", "hub", -1), ("category", "category", -1), ("forecast_p50", "forecast (median)", 1),
                                 ("usual", "usual that weekday", 1), ("lift_pct", "lift (%)", 1)], table_id="events-table"))
    else:
        parts.append('<p class="note">No event in the plan horizon.</p>')
    outlook = hub_outlook(plan, forecast, plan_date)
    parts.append(f'<h2 id="uncertainty">How sure is the forecast? ({plan_date})</h2>')
    if outlook.height:
        # the least certain first (most units expected short or hauled back); the rest folded away
        ranked = outlook.with_columns((pl.col("expected_short") + pl.col("expected_back")).alias("_u")).sort(
            "_u", "hub", "category", descending=[True, False, False])
        top, rest = ranked.head(OUTLOOK_SHOWN), ranked.slice(OUTLOOK_SHOWN)
        parts.append('<ul id="outlook">' + "".join(f"<li>{_e(w)}</li>" for w in top["words"].to_list()) + "</ul>")
        if rest.height:
            parts.append(f'<details><summary>{rest.height} more hub × category</summary><ul id="outlook-rest">'
                         + "".join(f"<li>{_e(w)}</li>" for w in rest["words"].to_list()) + "</ul></details>")
    parts.append(_changes(changes, places, plan_date))
    parts.append(_how_it_went(outcome, scorecard, places, as_of))
    if plan.height:
        parts.append(_hub_charts(plan, history, as_of, plan_date))
    parts.append(_quality(metrics, value, calibration_source))
    parts.append(_plan_table(first_day, plan, plan_date))
    parts.append("</body></html>")
    return "\n".join(parts)
