"""The demand model: how many units each hub's customers pick up, per category and day.

Expected pickups per hub × category × day multiply: category base rate, neighbourhood
size and taste, hub weight, weekly profile (per category), trend (per neighbourhood),
yearly season, public holidays (per category) and events (venue neighbourhood and its
neighbours, per category sensitivity). Realised pickups are negative-binomial (Poisson
with gamma noise), each picking up 1 + Poisson(basket - 1) units. Pickups happen in
locker opening hours 06:00–23:00 local, so a pickup's local date is its day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from .city import City
from .clock import is_holiday, local_seconds_to_epoch
from .events import Event
from .sizes import SizeSpec

OPEN_HOUR, CLOSE_HOUR = 6, 23
PICKUP_HOURS = np.array([0.5, 1.2, 1.6, 1.0, 0.8, 0.9, 1.3, 1.0, 0.8, 0.9, 1.3, 1.8, 1.9, 1.5, 1.0, 0.7, 0.4])
DEPOSIT_HOURS = np.array([2.0, 2.5, 2.2, 1.8, 1.5, 1.2, 1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
EVENT_SCALE = 15_000  # attendees that add one × the category's event sensitivity
NEIGHBOUR_SPILL = 0.35
NOISE_SHAPE = 5.0
DEPOSIT_EXCESS = 1.05  # deposits per expected pickup


@dataclass(frozen=True)
class LockerMoves:
    hub: np.ndarray
    cat: np.ndarray
    t: np.ndarray  # true UTC epoch seconds
    units: np.ndarray


def event_multiplier(city: City, evs: list[Event]) -> np.ndarray:
    """[neighbourhood, category] multiplier from the events on a day."""
    lift = np.zeros(len(city.nbh_ids))
    for ev in evs:
        x = ev.attendance / EVENT_SCALE
        lift[ev.nbh] += x
        lift[city.neighbours[ev.nbh]] += NEIGHBOUR_SPILL * x
    return 1.0 + lift[:, None] * city.cat_event[None, :]


def expected_pickups(city: City, spec: SizeSpec, d: date, day_index: int, evs: list[Event]) -> np.ndarray:
    """[hub, category] expected number of pickups on day `d`."""
    n = city.hub_nbh
    t_years = day_index / 365.0
    season = 1.0 + 0.12 * np.cos(2 * np.pi * (d.timetuple().tm_yday - 355) / 365.25)
    trend = 1.0 + city.growth[n] * t_years
    pop = city.population[n] / 15_000
    lam = (
        city.cat_base[None, :]
        * spec.pickup_scale
        * (pop * city.hub_weight * trend * season)[:, None]
        * city.affinity[n]
        * city.cat_weekly[:, d.weekday()][None, :]
        * event_multiplier(city, evs)[n]
    )
    if is_holiday(d):
        lam = lam * city.cat_holiday[None, :]
    return lam


def _times(rng: np.random.Generator, d: date, profile: np.ndarray, k: int) -> np.ndarray:
    hours = OPEN_HOUR + rng.choice(len(profile), size=k, p=profile / profile.sum())
    secs = hours * 3600 + rng.integers(0, 3600, k)
    return local_seconds_to_epoch(d, secs)


def _draw(rng: np.random.Generator, d: date, lam: np.ndarray, basket: np.ndarray, profile: np.ndarray,
          noise: np.ndarray | None = None) -> LockerMoves:
    """`noise`: the day's demand shock per hub × category (drawn here when not given)."""
    if noise is None:
        noise = rng.gamma(NOISE_SHAPE, 1.0 / NOISE_SHAPE, lam.shape)
    counts = rng.poisson(lam * noise).reshape(-1)
    idx = np.repeat(np.arange(counts.size), counts)
    h, c = np.divmod(idx, lam.shape[1])
    k = idx.size
    units = np.minimum(50, 1 + rng.poisson(np.maximum(basket[c] - 1.0, 0.0)))
    return LockerMoves(hub=h, cat=c, t=_times(rng, d, profile, k), units=units.astype(np.int64))


def locker_moves(
    city: City, spec: SizeSpec, d: date, day_index: int, evs: list[Event], rng: np.random.Generator
) -> tuple[LockerMoves, LockerMoves]:
    """(pickups, deposits) of one day. Couriers deposit in the morning the parcels of the
    day's customers (the same demand shock as the pickups) and a few more (DEPOSIT_EXCESS):
    parcels whose customers come late or never, which the lockers send back (stock.py)."""
    lam = expected_pickups(city, spec, d, day_index, evs)
    noise = rng.gamma(NOISE_SHAPE, 1.0 / NOISE_SHAPE, lam.shape)
    pickups = _draw(rng, d, lam, city.cat_basket, PICKUP_HOURS, noise)
    deposits = _draw(rng, d, lam * DEPOSIT_EXCESS, city.cat_basket, DEPOSIT_HOURS, noise)
    return pickups, deposits


def daily_demand(size: str, days: int, start: date, seed: int = 7):
    """The city's true daily demand without its devices: units picked up per neighbourhood ×
    category × day (zeros included; the same draws as `simulate`'s pickups, before any
    fault or late file), and its events (id, kind, venue neighbourhood, days, attendance).
    What the forecast benchmark (bench/bench_forecast_accuracy.py) scores on, at a
    fraction of a full simulation's cost."""
    import polars as pl

    from .city import build_city
    from .clock import rng_for
    from .events import calendar, events_by_day
    from .sizes import SIZES

    spec = SIZES[size]
    city = build_city(spec, seed)
    last = start + timedelta(days=days - 1)
    evs_all = calendar(city, spec, seed, start, last)
    evs_on = events_by_day(evs_all)
    n_nbh, n_cat = len(city.nbh_ids), len(city.cat_ids)
    units = np.zeros((days, n_nbh, n_cat))
    for i in range(days):
        d = start + timedelta(days=i)
        lam = expected_pickups(city, spec, d, i, evs_on.get(d, []))
        p = _draw(rng_for(seed, i, "demand"), d, lam, city.cat_basket, PICKUP_HOURS)
        np.add.at(units[i], (city.hub_nbh[p.hub], p.cat), p.units)
    dates = [start + timedelta(days=i) for i in range(days)]
    demand = pl.DataFrame({
        "demand_date": np.repeat(np.array(dates, dtype="datetime64[D]"), n_nbh * n_cat),
        "neighbourhood_id": np.tile(np.repeat(np.asarray(city.nbh_ids).astype(str), n_cat), days),
        "category": np.tile(np.asarray(city.cat_ids).astype(str), days * n_nbh),
        "units": units.reshape(-1),
    })
    events = pl.DataFrame({
        "event_id": [e.event_id for e in evs_all], "name": [e.name for e in evs_all],
        "kind": [e.kind for e in evs_all],
        "venue_neighbourhood_id": [str(city.nbh_ids[e.nbh]) for e in evs_all],
        "start_date": [e.days[0] for e in evs_all], "end_date": [e.days[-1] for e in evs_all],
        "expected_attendance": [e.attendance for e in evs_all],
    }, schema={"event_id": pl.String, "name": pl.String, "kind": pl.String, "venue_neighbourhood_id": pl.String,
               "start_date": pl.Date, "end_date": pl.Date, "expected_attendance": pl.Int64})
    return demand, events


@dataclass(frozen=True)
class TrueDemand:
    """What `daily_demand` draws from, per neighbourhood × category × day (days in order):
    the expected units and, by Monte Carlo, quantiles of the units' distribution — the best
    any forecaster could say (the forecast benchmark's `oracle`)."""
    dates: list[date]
    neighbourhood_ids: list[str]
    categories: list[str]
    mean: np.ndarray        # [day, neighbourhood, category]
    quantiles: np.ndarray   # [day, neighbourhood, category, level]
    levels: tuple[float, ...]


def true_daily_demand(size: str, days: int, start: date, seed: int = 7,
                      levels: tuple[float, ...] = (0.1, 0.5, 0.8, 0.9, 0.95), draws: int = 4000,
                      draw_seed: int = 11, neighbourhoods: list[str] | None = None,
                      last_days: int | None = None) -> TrueDemand:
    """The distribution `daily_demand(size, days, start, seed)` samples each day: per hub ×
    category, N ~ Poisson(λ·G) pickups with G ~ Gamma(NOISE_SHAPE, 1/NOISE_SHAPE), each of
    1 + Poisson(basket − 1) units, summed over the neighbourhood's hubs. Mean: Σ λ · basket
    (E[G] = 1). Quantiles from `draws` samples of that sum (units = N + Poisson((basket−1)·N);
    the 50-unit cap on one pickup is left out: at these baskets it is never reached).
    The sampling is the cost: `neighbourhoods` and `last_days` limit it to what is scored
    (quantiles elsewhere are NaN; the mean is always complete)."""
    from .city import build_city
    from .events import calendar, events_by_day
    from .sizes import SIZES

    spec = SIZES[size]
    city = build_city(spec, seed)
    evs_on = events_by_day(calendar(city, spec, seed, start, start + timedelta(days=days - 1)))
    n_nbh, n_cat = len(city.nbh_ids), len(city.cat_ids)
    dates = [start + timedelta(days=i) for i in range(days)]
    lam = np.stack([expected_pickups(city, spec, d, i, evs_on.get(d, [])) for i, d in enumerate(dates)])
    extra = np.maximum(city.cat_basket - 1.0, 0.0)
    mean = np.zeros((days, n_nbh, n_cat))
    np.add.at(mean, (slice(None), city.hub_nbh), lam * city.cat_basket[None, None, :])
    rng = np.random.default_rng(draw_seed)
    q = np.full((days, n_nbh, n_cat, len(levels)), np.nan)
    first = days - min(last_days or days, days)
    wanted = set(neighbourhoods) if neighbourhoods is not None else None
    for nb in range(n_nbh):
        if wanted is not None and str(city.nbh_ids[nb]) not in wanted:
            continue
        lam_nb = lam[first:, city.hub_nbh == nb, :]                # [day, hubs of nb, category]
        total = np.zeros((draws, days - first, n_cat))
        for j in range(lam_nb.shape[1]):
            g = rng.gamma(NOISE_SHAPE, 1.0 / NOISE_SHAPE, total.shape)
            n = rng.poisson(lam_nb[None, :, j, :] * g)
            total += n + rng.poisson(n * extra[None, None, :])
        q[first:, nb] = np.moveaxis(np.quantile(total, levels, axis=0), 0, -1)
    return TrueDemand(dates, [str(x) for x in city.nbh_ids], [str(x) for x in city.cat_ids], mean, q, tuple(levels))
