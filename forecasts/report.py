"""The operations report: one self-contained HTML file per plan date.

Opens with no network: plotly.js is inlined once (`include_plotlyjs=True` on the first
chart). Deterministic bytes: fixed div ids (`chart-<hub>`), no timestamps, rows and
traces in a fixed order, numbers rounded — re-rendering the same day gives the same file.

Sections, in the order an operations person needs them:
1. what to stage tomorrow — totals, the first day per hub × category, caps;
2. how good the forecasts are (backtest) and what the plan saves (cost simulation);
3. per hub: history of the last weeks, the forecast with its interval, the staged units;
4. the full plan table (hub, category, window, units, forecast and its 10–90 % interval,
   why capped); rows with 0 units are left to the CSV/xlsx.
"""

from __future__ import annotations

import html
from datetime import date, timedelta

import polars as pl

HISTORY_DAYS = 28
WINDOW_ORDER = ("night", "morning", "afternoon", "evening", "day")

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933;max-width:1200px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;margin-top:32px;border-bottom:2px solid #e4e7eb;padding-bottom:4px}
.sub{color:#52606d;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #cbd2d9;border-radius:8px;padding:10px 16px;min-width:150px;background:#f5f7fa}
.card .v{font-size:24px;font-weight:600} .card .l{color:#52606d;font-size:13px}
table{border-collapse:collapse;font-size:14px;margin:8px 0}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:right} th{background:#f5f7fa;position:sticky;top:0}
td.t,th.t{text-align:left} tr.capped td{background:#fff4e5}
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


def hub_figure(hub: str, plan_hub: pl.DataFrame, history: pl.DataFrame, forecast: pl.DataFrame):
    """Small multiples, one panel per category: the hub's share of recent daily demand
    (line), the forecast median with its 10–90 % range (point and whiskers, readable even
    for a one-day plan), and the units staged (bar). One legend for the four roles."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    daily = (plan_hub.group_by("plan_date", "category", "hub_share")
             .agg(pl.col("units").sum()).sort("category", "plan_date"))
    cats = sorted(daily["category"].unique().to_list())
    ncol = min(3, len(cats)) or 1
    nrow = max(1, math.ceil(len(cats) / ncol))
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=cats, horizontal_spacing=0.06,
                        vertical_spacing=0.16 if nrow > 1 else 0.1)
    for i, cat in enumerate(cats):
        r, c = i // ncol + 1, i % ncol + 1
        first = i == 0
        share = float(daily.filter(pl.col("category") == cat)["hub_share"][0])
        h = history.filter(pl.col("category") == cat).sort("ds")
        f = forecast.filter(pl.col("category") == cat).sort("forecast_date")
        d = daily.filter(pl.col("category") == cat)
        # explicit width (ms): a lone bar on a date axis is otherwise drawn 1 ms wide
        fig.add_trace(go.Bar(x=[str(x) for x in d["plan_date"]], y=d["units"].to_list(), name="units to stage",
                             width=[0.7 * 86_400_000] * d.height, marker={"color": "#3f9142"}, opacity=0.55,
                             showlegend=first, legendgroup="staged"),
                      row=r, col=c)
        if h.height:
            fig.add_trace(go.Scatter(x=[str(x) for x in h["ds"]], y=[round(v * share, 2) for v in h["y"]],
                                     mode="lines", name="demand (last weeks)", line={"color": "#52606d", "width": 1.5},
                                     showlegend=first, legendgroup="history"), row=r, col=c)
        if f.height:
            p50 = [round(v * share, 2) for v in f["p50"]]
            fig.add_trace(go.Scatter(
                x=[str(x) for x in f["forecast_date"]], y=p50, mode="markers+lines",
                name="forecast (median, 10–90 % range)", marker={"color": "#d9480f", "size": 8},
                line={"color": "#d9480f", "dash": "dot"}, showlegend=first, legendgroup="forecast",
                error_y={"type": "data", "symmetric": False, "color": "#d9480f", "thickness": 2,
                         "array": [round(v * share - m, 2) for v, m in zip(f["p90"], p50)],
                         "arrayminus": [round(m - v * share, 2) for v, m in zip(f["p10"], p50)]}),
                row=r, col=c)
    fig.update_layout(title={"text": f"Hub {hub}", "y": 0.99, "yanchor": "top"}, height=120 + 230 * nrow,
                      margin={"l": 40, "r": 20, "t": 100, "b": 30}, template="plotly_white",
                      legend={"orientation": "h", "x": 0.2, "xanchor": "left", "y": 0.985, "yanchor": "top",
                              "yref": "container"})
    fig.update_xaxes(tickformat="%d %b", nticks=6)
    return fig


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
) -> str:
    """The whole report as one HTML string (pure: same inputs, same bytes). `events`
    (marts.dim_events) and `places` (hub and neighbourhood names) are optional."""
    from forecasts.narrative import events_in_horizon, headline, hub_outlook

    if places is not None and not places.is_empty() and plan.height and "hub_name" not in plan.columns:
        plan = plan.join(places.select("hub_id", "hub_name", "neighbourhood_name"), on="hub_id", how="left")
    if plan.height and "window" in plan.columns:  # windows in the order of the day
        rank = {n: i for i, n in enumerate(WINDOW_ORDER)}
        plan = (plan.with_columns(pl.col("window").replace_strict(rank, default=len(rank)).alias("_w"))
                .sort("plan_date", "hub_id", "category", "_w").drop("_w"))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>civicflow staging plan {plan_date}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>Staging plan for {plan_date}</h1>"
                 f'<p class="sub">Forecast from demand up to {as_of}. Units to pre-stage per hub, category and '
                 f"delivery window. Generated by civicflow.</p>")
    # 1. summary
    tot = plan.group_by("category").agg(pl.col("units").sum()).sort("category") if plan.height else pl.DataFrame()
    capped = plan.filter(pl.col("cap_reason").is_not_null()) if plan.height else plan
    first_day = plan.filter(pl.col("plan_date") == plan_date) if plan.height else plan
    cards = [f'<div class="card"><div class="v">{int(first_day["units"].sum()) if first_day.height else 0:,}</div>'
             f'<div class="l">units to stage on {plan_date}</div></div>',
             f'<div class="card"><div class="v">{plan["hub_id"].n_unique() if plan.height else 0}</div>'
             f'<div class="l">hubs</div></div>',
             f'<div class="card"><div class="v">{capped.select("hub_id", "category").unique().height if capped.height else 0}'
             f'</div><div class="l">hub × category capped by capacity</div></div>']
    heads = headline(value)
    for k, text in enumerate(heads):
        pct, rest = text.split(" ", 1)[0], text.split(" fulfilment cost than ", 1)[1]
        cards.append(f'<div class="card" id="headline-{k}"><div class="v">{_e(pct)} %</div>'
                     f'<div class="l">fulfilment cost saved vs {_e(rest)} (backtest)</div></div>')
    parts.append("<h2>Summary</h2><div class=\"cards\">" + "".join(cards) + "</div>")
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
    if outlook.height:
        parts.append(f'<h2 id="uncertainty">How sure is the forecast? ({plan_date})</h2><ul id="outlook">'
                     + "".join(f"<li>{_e(w)}</li>" for w in outlook["words"].to_list()) + "</ul>")
    if tot.height:
        parts.append("<p>Units per category over the plan: " + ", ".join(
            f"<b>{_e(c)}</b> {int(u):,}" for c, u in tot.iter_rows()) + ".</p>")

    # 1b. the first day at a glance: hub × category units (all windows)
    if first_day.height:
        cats = sorted(first_day["category"].unique().to_list())
        named = "hub_name" in first_day.columns
        if not named:
            first_day = first_day.with_columns(pl.col("hub_id").alias("hub_name"), pl.col("neighbourhood_id").alias("neighbourhood_name"))
        glance = (first_day.group_by("hub_id", "hub_name", "neighbourhood_name", "category").agg(pl.col("units").sum())
                  .pivot(on="category", index=["hub_id", "hub_name", "neighbourhood_name"], values="units")
                  .sort("hub_id"))
        for c in cats:
            if c not in glance.columns:
                glance = glance.with_columns(pl.lit(0).alias(c))
        glance = glance.with_columns(pl.sum_horizontal(*[pl.col(c).fill_null(0) for c in cats]).alias("_total"))
        capped_hubs = set(first_day.filter(pl.col("cap_reason").is_not_null())["hub_id"].to_list())
        parts.append(f"<h2>{plan_date} at a glance: units per hub</h2>"
                     '<p class="note">All windows together; hubs shaded orange have at least one capped category.</p>')
        parts.append(_table(glance, [("hub_id", "hub", -1), ("hub_name", "hub name", -1),
                                     ("neighbourhood_name", "neighbourhood", -1),
                                     *[(c, c, 0) for c in cats], ("_total", "total", 0)],
                            lambda r: "capped" if r["hub_id"] in capped_hubs else "", table_id="glance-table"))

    # 4. quality and value
    parts.append("<h2>How good are the forecasts? (rolling-origin backtest)</h2>")
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
    parts.append("<h2>What does the plan save? (cost simulation on the backtest days)</h2>")
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

    # 3. charts per hub
    import plotly.io as pio

    parts.append("<h2>Per hub: history, forecast and staged units</h2>"
                 "<p class=\"note\">One panel per category, in units per day at this hub. Grey line: demand of the "
                 "last 4 weeks (the hub's share of its neighbourhood). Orange point: the forecast median; its whiskers "
                 "span the 10–90 % range (8 days in 10 fall inside). Green bar: units to stage (all windows). "
                 "The bar sits above the median for categories that are expensive to miss.</p>")
    first = True
    hist_start = as_of - timedelta(days=HISTORY_DAYS - 1)
    for hub in sorted(plan["hub_id"].unique().to_list()) if plan.height else []:
        ph = plan.filter(pl.col("hub_id") == hub)
        nb = ph["neighbourhood_id"][0]
        fig = hub_figure(hub, ph, history.filter((pl.col("neighbourhood_id") == nb) & (pl.col("ds") >= hist_start)),
                         forecast.filter(pl.col("neighbourhood_id") == nb))
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=first, div_id=f"chart-{hub}",
                                 config={"displaylogo": False, "responsive": True}, validate=False))
        first = False


    # 2. plan table
    parts.append("<h2>The full plan</h2><p class=\"note\">units = what to have at the hub at the start of the window. "
                 "The forecast columns are the hub's share of its neighbourhood's demand. Rows shaded orange "
                 "were cut by a capacity cap (<i>hub_capacity</i>: the category's space at the hub; "
                 "<i>hub_total_capacity</i>: the hub's total space, given to the categories that cost most "
                 "to miss).</p>")
    cols = [("plan_date", "day", -1), ("hub_id", "hub", -1), ("neighbourhood_id", "neighbourhood", -1),
            ("category", "category", -1), ("window", "window", -1), ("units", "units", 0),
            ("forecast_p50", "forecast (median)", 1), ("p10", "low (10 %)", 1), ("p90", "high (90 %)", 1),
            ("quantile", "service level", 2), ("capacity_units", "capacity", 0), ("cap_reason", "capped by", -1)]
    cols = [c for c in cols if c[0] in plan.columns]
    shown = plan.filter((pl.col("units") > 0) | pl.col("cap_reason").is_not_null()) if plan.height else plan
    if shown.height < plan.height:
        parts.append(f'<p class="note">{plan.height - shown.height} rows with 0 units are left out here '
                     "(they are in staging_plan.csv / .xlsx).</p>")
    parts.append(_table(shown, cols, lambda r: "capped" if r.get("cap_reason") else "", table_id="plan-table"))

    parts.append("</body></html>")
    return "\n".join(parts)
