"""The events calendar: festivals, sports, concerts and markets at the city's venues.

Generated week by week from the simulation start with a per-week random stream, so a
calendar written for a longer window starts with exactly the calendar of a shorter one.
The calendar published in the landing zone looks `EVENT_HORIZON_DAYS` ahead of the last
simulated day: the forecaster needs tomorrow's events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from .city import City
from .clock import local_iso, local_seconds_to_epoch, rng_for
from .sizes import SizeSpec

EVENT_HORIZON_DAYS = 90
# kind: probability, attendance range, (start hour choices), duration hours, days
EVENT_KINDS = {
    "festival": (0.15, (15_000, 60_000), (12,), 11, (2, 3)),
    "sports": (0.30, (8_000, 45_000), (14, 20), 2, (1, 1)),
    "concert": (0.30, (2_000, 18_000), (20,), 3, (1, 1)),
    "market": (0.25, (1_000, 6_000), (8,), 6, (1, 1)),
}
_NAMES = {
    "festival": ("Summer Sounds", "Canal Lights", "Food Truck Fest", "Harbour Days"),
    "sports": ("Derby", "Cup Final", "City Marathon", "Derby Night"),
    "concert": ("Symphony Night", "Arena Tour", "Jazz Evening", "Rooftop Live"),
    "market": ("Farmers Market", "Antique Market", "Night Market", "Book Market"),
}


@dataclass(frozen=True)
class Event:
    event_id: str
    name: str
    kind: str
    venue: int  # index into city.venue_ids
    nbh: int  # index into city.nbh_ids
    start_epoch: int
    end_epoch: int
    days: tuple[date, ...]  # local dates the event is on
    start_hour: int
    attendance: int


def events_for_week(city: City, spec: SizeSpec, seed: int, start: date, week: int) -> list[Event]:
    rng = rng_for(seed, week, "events")
    n = rng.poisson(spec.events_per_week)
    kinds = list(EVENT_KINDS)
    probs = np.array([EVENT_KINDS[k][0] for k in kinds])
    out: list[Event] = []
    week_start = start + timedelta(days=7 * week)
    for i in range(n):
        kind = kinds[rng.choice(len(kinds), p=probs)]
        _, (lo, hi), hours, dur, (dmin, dmax) = EVENT_KINDS[kind]
        # festivals and sports favour weekends
        dow = int(rng.choice(7, p=[0.08, 0.08, 0.1, 0.12, 0.17, 0.25, 0.2]))
        d0 = week_start + timedelta(days=(dow - week_start.weekday()) % 7)
        ndays = int(rng.integers(dmin, dmax + 1))
        hour = int(rng.choice(hours))
        venue = int(rng.integers(len(city.venue_ids)))
        attendance = int(rng.integers(lo, hi) // 100 * 100)
        days = tuple(d0 + timedelta(days=k) for k in range(ndays))
        s = int(local_seconds_to_epoch(d0, np.array([hour * 3600]))[0])
        end_h = min(hour + dur, 23)
        e = int(local_seconds_to_epoch(days[-1], np.array([end_h * 3600]))[0])
        name = f"{_NAMES[kind][int(rng.integers(4))]} {city.nbh_names[city.venue_nbh[venue]]}"
        out.append(
            Event(
                event_id=f"EV-{d0:%Y%m%d}-{week:03d}{i:02d}",
                name=name, kind=kind, venue=venue, nbh=int(city.venue_nbh[venue]),
                start_epoch=s, end_epoch=e, days=days, start_hour=hour, attendance=attendance,
            )
        )
    return out


def calendar(city: City, spec: SizeSpec, seed: int, start: date, until: date) -> list[Event]:
    """Every event starting from `start` up to and including `until`."""
    weeks = (until - start).days // 7 + 1
    evs = [ev for w in range(weeks) for ev in events_for_week(city, spec, seed, start, w)]
    return sorted((ev for ev in evs if start <= ev.days[0] <= until), key=lambda ev: (ev.start_epoch, ev.event_id))


def events_by_day(evs: list[Event]) -> dict[date, list[Event]]:
    out: dict[date, list[Event]] = {}
    for ev in evs:
        for d in ev.days:
            out.setdefault(d, []).append(ev)
    return out


def events_frame(city: City, evs: list[Event]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [e.event_id for e in evs],
            "name": [e.name for e in evs],
            "kind": [e.kind for e in evs],
            "venue_neighbourhood_id": [str(city.nbh_ids[e.nbh]) for e in evs],
            "start_time": [local_iso(e.start_epoch) for e in evs],
            "end_time": [local_iso(e.end_epoch) for e in evs],
            "expected_attendance": [e.attendance for e in evs],
        },
        schema={
            "event_id": pl.String, "name": pl.String, "kind": pl.String, "venue_neighbourhood_id": pl.String,
            "start_time": pl.String, "end_time": pl.String, "expected_attendance": pl.Int64,
        },
    )
