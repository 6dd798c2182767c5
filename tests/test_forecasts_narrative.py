"""The report's words: uncertainty sentences, expected short / hauled back, the headline
against the best simple policy first, and every event of the horizon with its lift."""

from __future__ import annotations

import numpy as np
import polars as pl
from test_report import AS_OF, DAYS, _inputs

from forecasts.narrative import expected_short_and_back, headline, hub_outlook
from forecasts.report import render


def test_expected_short_and_back_move_the_right_way():
    q = np.array([[30.0, 40, 46, 50, 54]])
    s_lo, b_lo = expected_short_and_back(q, 30)
    s_hi, b_hi = expected_short_and_back(q, 55)
    assert s_lo > s_hi >= 0 and b_hi > b_lo >= 0
    # staging the median: about as much short as hauled back on this near-symmetric forecast
    s, b = expected_short_and_back(q, 40)
    assert abs(s - b) < 2.5


def test_outlook_says_nine_days_in_ten_with_the_hubs_p90():
    plan, fc, *_ = _inputs()
    out = hub_outlook(plan, fc, DAYS[0])
    a = out.filter(pl.col("hub_id") == "HUB-A").row(0, named=True)
    share = plan.filter(pl.col("hub_id") == "HUB-A")["hub_share"][0]
    assert a["p90"] == round(50.0 * share, 1)
    assert a["words"].startswith(f"On 9 days in 10, parcels demand at HUB-A stays under {int(np.ceil(50.0 * share))} units")
    assert "short" in a["words"] and "hauled back" in a["words"]


def test_headline_puts_the_best_simple_policy_first_with_its_interval():
    *_, value = _inputs()
    lines = headline(value)
    assert lines[0] == "54 % lower fulfilment cost than staging yesterday's demand (95 % interval 40–65 %)"
    assert lines[1].startswith("92 % lower fulfilment cost than staging nothing (reactive)")


def test_report_calls_out_every_event_with_attendance_and_lift():
    plan, fc, hist, metrics, value = _inputs()
    events = pl.DataFrame({"event_id": ["E1", "E2"], "name": ["Cup Final", "Far away"], "kind": ["match"] * 2,
                           "venue_neighbourhood_id": ["N1", "N1"], "start_date": [DAYS[1], DAYS[1] + __import__("datetime").timedelta(days=30)],
                           "end_date": [DAYS[1], DAYS[1] + __import__("datetime").timedelta(days=30)],
                           "expected_attendance": [29500, 1000]})
    places = pl.DataFrame({"hub_id": ["HUB-A", "HUB-B", "HUB-C"], "hub_name": ["Harbour", "Bridge", "Clinic"],
                           "neighbourhood_id": ["N1", "N1", "N2"], "neighbourhood_name": ["Northfield"] * 2 + ["Old Town"],
                           "hub_address": ["Quay 1", "Bridge Road 2", "Hill 3"], "lat": [1.0, 1.001, 1.1],
                           "lon": [2.0] * 3, "neighbourhood_lat": [1.0] * 2 + [1.1], "neighbourhood_lon": [2.0] * 3})
    html = render(plan, fc, hist, metrics, value, AS_OF, DAYS[0], "test", events=events, places=places)
    table = html.split('id="events-table"', 1)[1].split("</table>", 1)[0]
    assert "Cup Final" in table and "29,500" in table and "Far away" not in table
    assert "Harbour" in table and "Bridge" in table and "Clinic" not in table  # the venue's hubs only
    assert "lift (%)" in table
    assert html.index('id="headline-0"') < html.index('id="headline-1"')
    assert "saved vs staging yesterday&#x27;s demand" in html.split('id="headline-0"', 1)[1][:400]
    assert "On 9 days in 10, parcels demand at Harbour stays under" in html
