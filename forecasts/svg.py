"""Small inline SVG charts for the report and the pick lists: one compact chart per hub and a
map of the hubs over the neighbourhoods, drawn from the coordinates.

Why not plotly: plotly.js alone is 3.6 MB, over twice the report's 1.5 MB budget; these
charts are static, print as they look, need no script and no tile server, and are a few
kilobytes each. Deterministic: the same data gives the same bytes (coordinates rounded,
rows in a fixed order).
"""

from __future__ import annotations

import html
import math
from datetime import date

GREY, ORANGE, GREEN, RED, BLUE, LIGHT = "#7b8794", "#d9480f", "#3f9142", "#c92a2a", "#1c7ed6", "#e4e7eb"


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def hub_chart(hub_id: str, title: str, rows: list[dict], days: list[date], first_plan_day: date) -> str:
    """One row per category: the hub's daily demand over the last weeks (grey line), and on
    each plan day the forecast median (orange dot) with its 10–90 % range (whisker) and the
    units to stage (green bar). `rows`: {category, history: {day: y}, plan: {day: (units,
    p10, p50, p90)}}. Every row has its own scale, printed at its left (its maximum)."""
    width, left, right, row_h, top = 720, 110, 16, 36, 22
    past = [d for d in days if d < first_plan_day]
    ahead = [d for d in days if d >= first_plan_day]
    span = width - left - right
    # the plan days get a quarter of the width however short the horizon, so a bar is readable
    hist_w = span * (0.75 if ahead else 1.0) if past else 0.0
    step_past = hist_w / max(len(past), 1)
    step = (span - hist_w) / max(len(ahead), 1) if ahead else step_past
    x_of = {d: left + step_past * (k + 0.5) for k, d in enumerate(past)}
    x_of |= {d: left + hist_w + step * (k + 0.5) for k, d in enumerate(ahead)}
    step = min(step, 60.0)
    h = top + row_h * len(rows) + 18
    out = [f'<svg class="hub-chart" id="chart-{_e(hub_id)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {width} {h}" width="100%" role="img" aria-label="{_e(title)}">',
           f'<text x="0" y="14" font-size="13" font-weight="600">{_e(title)}</text>']
    if first_plan_day in x_of:
        xs = left + hist_w
        out.append(f'<rect x="{_n(xs)}" y="{top - 4}" width="{_n(width - right - xs)}" height="{row_h * len(rows) + 4}" '
                   f'fill="#f5f7fa"/>')
    for i, r in enumerate(rows):
        y0 = top + row_h * i
        base = y0 + row_h - 8
        vals = list(r["history"].values()) + [v for t in r["plan"].values() for v in (t[0], t[3])]
        vmax = max([v for v in vals if v is not None] + [1.0])
        scale = (row_h - 12) / vmax

        def y(v: float, base=base, scale=scale) -> str:
            return _n(base - v * scale)

        out.append(f'<text x="0" y="{y0 + row_h / 2 + 4:.0f}" font-size="12">{_e(r["category"])}</text>'
                   f'<text x="{left - 6}" y="{y0 + 12}" font-size="10" fill="{GREY}" text-anchor="end">{_n(vmax)}</text>'
                   f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="{LIGHT}"/>')
        for d, (units, p10, p50, p90) in sorted(r["plan"].items()):
            x = x_of[d]
            out.append(f'<rect class="staged" data-day="{d}" data-category="{_e(r["category"])}" data-units="{units}" '
                       f'x="{_n(x - step * 0.35)}" y="{y(units)}" width="{_n(step * 0.7)}" height="{_n(units * scale)}" '
                       f'fill="{GREEN}" opacity="0.55"><title>{_e(r["category"])} {d}: stage {units}</title></rect>')
            if p50 is not None:
                out.append(f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{y(p10)}" y2="{y(p90)}" stroke="{ORANGE}" stroke-width="2"/>'
                           f'<circle cx="{_n(x)}" cy="{y(p50)}" r="3" fill="{ORANGE}"><title>median {p50:.1f}, '
                           f'10–90 %: {p10:.1f}–{p90:.1f}</title></circle>')
        pts = " ".join(f"{_n(x_of[d])},{y(v)}" for d, v in sorted(r["history"].items()) if d in x_of)
        if pts:
            out.append(f'<polyline points="{pts}" fill="none" stroke="{GREY}" stroke-width="1.4"/>')
    if days:
        for d in (days[0], first_plan_day):
            if d in x_of:
                out.append(f'<text x="{_n(x_of[d])}" y="{h - 4}" font-size="10" fill="{GREY}" '
                           f'text-anchor="middle">{d:%d %b}</text>')
    out.append("</svg>")
    return "".join(out)


def _colour_change(change: int | None) -> str:
    if change is None or change == 0:
        return GREY
    return GREEN if change > 0 else RED


def _colour_pressure(ratio: float | None) -> str:
    if ratio is None:
        return GREY
    if ratio >= 0.999:
        return RED
    return ORANGE if ratio >= 0.8 else BLUE


def _ring(n: int) -> float:
    """Radius of the ring a neighbourhood's n hubs sit on: 0 for one, wider for many."""
    return 0.0 if n <= 1 else min(max(16.0, 4.5 * n), 30.0)


def city_map(neighbourhoods: list[dict], hubs: list[dict], by_change: bool) -> str:
    """Neighbourhoods (grey discs at their centroids, named) and their hubs (circles where
    each hub stands, area ∝ units to stage), coloured by the change against last night's
    plan (`by_change`) or else by capacity pressure (units / capacity). `neighbourhoods`:
    {neighbourhood_id, name, lat, lon}; `hubs`: {hub_id, hub_name, neighbourhood_id, lat,
    lon, units, change, pressure}; a hub without coordinates sits on a ring around its
    neighbourhood's centroid. An equirectangular projection (x scaled by cos(latitude)):
    exact enough for a city."""
    width, height, pad = 720, 460, 50
    located = [n for n in neighbourhoods if n.get("lat") is not None and n.get("lon") is not None]
    if not located:
        return '<p class="note">No coordinates in marts.dim_neighbourhoods: no map.</p>'
    points = located + [h for h in hubs if h.get("lat") is not None and h.get("lon") is not None]
    lat0 = sum(n["lat"] for n in located) / len(located)
    kx = math.cos(math.radians(lat0))
    xs = [n["lon"] * kx for n in points]
    ys = [n["lat"] for n in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    s = min((width - 2 * pad) / span, (height - 2 * pad) / span)
    cx0 = (width - s * (max(xs) - min(xs))) / 2
    cy0 = (height - s * (max(ys) - min(ys))) / 2

    def proj(lat: float, lon: float) -> tuple[float, float]:
        return cx0 + s * (lon * kx - min(xs)), height - cy0 - s * (lat - min(ys))

    umax = max([h["units"] for h in hubs] + [1])
    out = [f'<svg id="city-map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 30}" width="100%" '
           f'role="img" aria-label="hubs over neighbourhoods">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fbfcfd" stroke="{LIGHT}"/>']
    by_nb: dict[str, list[dict]] = {}
    for h in sorted(hubs, key=lambda h: h["hub_id"]):
        by_nb.setdefault(h["neighbourhood_id"], []).append(h)
    pos = {n["neighbourhood_id"]: proj(n["lat"], n["lon"]) for n in located}
    at: dict[str, tuple[float, float, float]] = {}  # hub → x, y, the room its circle may take
    for nb, group in by_nb.items():
        if nb not in pos:
            continue
        x0, y0 = pos[nb]
        unplaced = [h for h in group if h.get("lat") is None or h.get("lon") is None]
        for h in group:
            if h in unplaced:
                off = _ring(len(unplaced))
                a = 2 * math.pi * unplaced.index(h) / len(unplaced)
                at[h["hub_id"]] = (x0 + off * math.cos(a), y0 + off * math.sin(a),
                                   14.0 if len(unplaced) == 1 else max(math.pi * off / len(unplaced) - 1, 3.0))
            else:
                at[h["hub_id"]] = (*proj(h["lat"], h["lon"]), 12.0)
    # hubs that stand close share the room between them: a circle never hides its neighbour
    for hub_id, (x, y, room) in list(at.items()):
        near = min([math.hypot(x - ox, y - oy) for k, (ox, oy, _) in at.items() if k != hub_id] + [2 * room])
        at[hub_id] = (x, y, max(min(room, near / 2 - 0.5), 3.0))
    for n in sorted(located, key=lambda n: n["neighbourhood_id"]):
        x, y = pos[n["neighbourhood_id"]]
        # the disc covers the neighbourhood's hubs
        reach = max([math.hypot(at[h["hub_id"]][0] - x, at[h["hub_id"]][1] - y) + at[h["hub_id"]][2]
                     for h in by_nb.get(n["neighbourhood_id"], []) if h["hub_id"] in at] + [14.0])
        # the name goes below the disc, or above it when another neighbourhood sits just below
        crowded = any(0 < oy - y < 90 and abs(ox - x) < 60 for k, (ox, oy) in pos.items() if k != n["neighbourhood_id"])
        ty = y - reach - 6 if crowded else y + reach + 13
        out.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(reach)}" fill="{LIGHT}" opacity="0.7"/>'
                   f'<text x="{_n(x)}" y="{_n(ty)}" font-size="11" fill="#52606d" text-anchor="middle">'
                   f'{_e(n["name"])}</text>')
    for h in sorted(hubs, key=lambda h: h["hub_id"]):
        if h["hub_id"] not in at:
            continue
        x, y, room = at[h["hub_id"]]
        r = 2 + (room - 2) * math.sqrt(max(h["units"], 0) / umax)
        colour = _colour_change(h.get("change")) if by_change else _colour_pressure(h.get("pressure"))
        what = (f"change {h['change']:+d}" if h.get("change") is not None else "no plan last night") if by_change \
            else (f"{100 * h['pressure']:.0f} % of capacity" if h.get("pressure") is not None else "no capacity")
        out.append(f'<circle class="hub" data-hub="{_e(h["hub_id"])}" data-units="{h["units"]}" cx="{_n(x)}" '
                   f'cy="{_n(y)}" r="{_n(r)}" fill="{colour}" fill-opacity="0.8" stroke="#fff">'
                   f'<title>{_e(h["hub_name"])}: {h["units"]:,} units, {_e(what)}</title></circle>')
    legend = ([(GREEN, "more than last night"), (RED, "fewer"), (GREY, "same / no plan last night")] if by_change
              else [(BLUE, "under 80 % of capacity"), (ORANGE, "80–99 %"), (RED, "full (capped)")])
    x = 10
    for colour, label in legend:
        out.append(f'<circle cx="{x + 6}" cy="{height + 16}" r="6" fill="{colour}"/>'
                   f'<text x="{x + 16}" y="{height + 20}" font-size="11">{_e(label)}</text>')
        x += 30 + 6 * len(label)
    out.append(f'<text x="{width - 10}" y="{height + 20}" font-size="11" text-anchor="end">circle area: units to stage</text>')
    out.append("</svg>")
    return "".join(out)
