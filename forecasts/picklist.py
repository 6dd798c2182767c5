"""Pick lists: one printable page per hub for the people who stage the lockers.

`exports/<plan date>/pick_lists/<hub>.html` per hub, and `all.html` with every hub, one per
printed page (print CSS: A4, no screen chrome, a page break between hubs). With a headless
Chromium (`ForecastConfig.chromium`), `pick_lists.pdf` is printed from `all.html` offline:
one page per hub, its document dates set to the plan date (the same plan, the same bytes).

Each page: the hub's name, address, neighbourhood and coordinates, the day (with its
weekday), then per delivery window (in time order) and category with something to stage:
the units to stage, the median and 90 % demand (the hub's share), the hub's space for the
category and the space left after staging, and a box to tick.
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl

from forecasts.places import with_places

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#1f2933;margin:24px;max-width:800px}
h1{font-size:22px;margin:0 0 2px} .sub{color:#52606d;margin:0 0 4px;font-size:13px}
.day{font-size:16px;font-weight:600;margin:0 0 10px} .none{color:#52606d;font-weight:400}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #cbd2d9;padding:4px 8px;text-align:right} th{background:#f5f7fa}
td.t,th.t{text-align:left} tr.win td{background:#eef2f6;font-weight:600;text-align:left}
tr.tot td{font-weight:600} .box{width:14px;height:14px;border:1px solid #1f2933;display:inline-block}
.warn{color:#b44d12;font-weight:600} .note{color:#52606d;font-size:12px;margin-top:8px}
.page{page-break-after:always;break-after:page} .page:last-child{page-break-after:auto;break-after:auto}
@page{size:A4;margin:12mm}
@media print{body{margin:0;max-width:none} .screen{display:none} th{background:#eee!important}}
"""


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v))


def safe_name(hub_id: str) -> str:
    """The hub's file name: its id with anything but letters, digits, dot, dash, underscore
    replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(hub_id)) or "hub"


def _page(hub: pl.DataFrame, plan_date: object) -> str:
    r0 = hub.row(0, named=True)
    where = " · ".join(x for x in (r0.get("hub_address"), r0["neighbourhood_name"]) if x)
    if r0.get("lat") is not None and r0.get("lon") is not None:
        where += f" · {r0['lat']:.5f}, {r0['lon']:.5f}"
    body = []
    for win in hub["window"].unique(maintain_order=True).to_list():
        w = hub.filter(pl.col("window") == win)
        # a row with nothing to stage is left out: the page lists what to put in the lockers
        todo = w.filter(pl.col("units") > 0)
        empty = "" if todo.height else ' <span class="none">· nothing to stage</span>'
        body.append(f'<tr class="win"><td colspan="7">{_e(win)} {_e(w["window_hours"][0])}{empty}</td></tr>')
        for r in todo.iter_rows(named=True):
            cap = r.get("capacity_units")
            left = None if cap is None else int(cap) - int(r["units"])
            flag = ' <span class="warn">capped</span>' if r.get("cap_reason") else ""
            body.append(f'<tr><td class="t">{_e(r["category"])}{flag}</td><td class="units">{int(r["units"]):,}</td>'
                        f'<td>{r["forecast_p50"]:.1f}</td><td>{r["p90"]:.1f}</td>'
                        f'<td>{"" if cap is None else f"{int(cap):,}"}</td><td class="left">'
                        f'{"" if left is None else f"{left:,}"}</td><td><span class="box"></span></td></tr>')
    total = int(hub["units"].sum())
    body.append(f'<tr class="tot"><td class="t">total</td><td class="total">{total:,}</td>'
                f'<td colspan="5"></td></tr>')
    return (f'<section class="page" id="hub-{_e(safe_name(r0["hub_id"]))}">'
            f"<h1>Pick list · {_e(r0['hub_name'])}</h1>"
            f'<p class="sub">hub {_e(r0["hub_id"])} · {_e(where)}</p>'
            f'<p class="day">for {_e(_day(plan_date))}</p>'
            '<table><thead><tr><th class="t">category</th><th>units to stage</th><th>median demand</th>'
            '<th>90 % demand</th><th>space (units)</th><th>space left</th><th>done</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            '<p class="note">Units to stage: what to have in the lockers at the start of the window. 90 % demand: '
            "on 9 days in 10 demand stays under it. Space left: the category's locker space after staging. "
            "A category with nothing to stage in a window is not listed.</p>"
            "</section>")


def _day(plan_date: object) -> str:
    """`Friday 1 May 2026` for a date (the day a crew stages for, read at a glance)."""
    d = plan_date if isinstance(plan_date, date) else date.fromisoformat(str(plan_date))
    return f"{d:%A} {d.day} {d:%B %Y}"


def _doc(title: str, pages: list[str], back: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<style>{CSS}</style></head><body><p class="screen"><a href="{back}">← report</a></p>'
            + "".join(pages) + "</body></html>")


def pick_lists(plan: pl.DataFrame, places: pl.DataFrame | None, plan_date: object) -> dict[str, str]:
    """{file name: html} — one page per hub for `plan_date`, and `all.html` with them all.
    Pure: the same plan gives the same bytes."""
    day = with_places(plan.filter(pl.col("plan_date") == plan_date), places)
    out: dict[str, str] = {}
    pages = []
    for hub_id in sorted(day["hub_id"].unique().to_list()):
        hub = day.filter(pl.col("hub_id") == hub_id)
        page = _page(hub, plan_date)
        pages.append(page)
        out[f"{safe_name(hub_id)}.html"] = _doc(f"Pick list {hub['hub_name'][0]} {plan_date}", [page], "../report.html")
    out["all.html"] = _doc(f"Pick lists {plan_date}", pages, "../report.html")
    return out


def fixed_dates(pdf: bytes, day: object) -> bytes:
    """Chromium stamps the PDF's CreationDate and ModDate with the clock (the only bytes
    that differ between two prints); set both to `day` at 00:00:00 UTC. Same length, so the
    cross-reference offsets stay right."""
    stamp = str(day).replace("-", "").encode()[:8].ljust(8, b"0") + b"000000"
    return re.sub(rb"/(CreationDate|ModDate) \(D:\d{14}", lambda m: b"/" + m.group(1) + b" (D:" + stamp, pdf)


def print_pdf(chromium: str, source: Path, target: Path, day: object = "2000-01-01") -> Path:
    """Print `source` to `target` with headless Chromium, offline (no network, no profile
    left behind), its dates set to `day` so the same page gives the same bytes. Raises
    RuntimeError with Chromium's last words when no PDF comes out."""
    # Chromium's helper processes outlive the browser by a moment and still write into the
    # profile: they are stopped with their group, and a straggler's file does not fail the print.
    with tempfile.TemporaryDirectory(prefix="civicflow-chromium-", ignore_cleanup_errors=True) as profile:
        tmp = target.with_name(f".{target.name}.tmp")
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={tmp}",
               source.resolve().as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=120)
        finally:
            stop_group(proc)
        if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            raise RuntimeError(f"{chromium} printed no PDF of {source}: {(stderr or '').strip()[-300:]}")
        tmp.write_bytes(fixed_dates(tmp.read_bytes(), day))
        tmp.replace(target)
    return target


def export_pick_lists(plan: pl.DataFrame, places: pl.DataFrame | None, exports_dir: Path, first_date: object,
                      chromium: str | None = None) -> Path:
    """Write `<exports_dir>/<first_date>/pick_lists/` (and its PDF when `chromium` is given);
    returns the folder."""
    folder = Path(exports_dir) / str(first_date) / "pick_lists"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pick_lists(plan, places, first_date).items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / name)
    if chromium:
        print_pdf(chromium, folder / "all.html", folder / "pick_lists.pdf", first_date)
    return folder


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and every process of its group
    (Chromium's helpers outlive the browser by a moment): SIGTERM, then SIGKILL, each time
    waiting until the whole group is gone."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
