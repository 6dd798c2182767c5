"""The true stock in the lockers: what is deposited, picked up and sent back uncollected.

Per hub × category, the stock is a set of cohorts by the day they were deposited. Each
day, in this order:

1. the morning sweep (05:00–06:00 local, before the lockers open) takes out what has
   waited `HOLD_DAYS` days uncollected: those units are returned to the depot
   (`locker_return` readings, one per unit);
2. the day's deposits join as a new cohort;
3. the day's pickups are served from the stock, each customer collecting their own
   parcel whichever day it came (so the units picked up are drawn at random across the
   cohorts); pickups beyond the stock are served from the depot (shortage).

Pickups and deposits are the demand model's draws (`locker_moves`, the same random stream
as the day's telemetry), so a day's stock depends on every day before it: the ledger is
built once, in order, before the days are generated (in parallel) from it.

The lockers report occupancy from it: the hub's units in stock across categories over its
total space, as each locker senses it (±`OCCUPANCY_NOISE`, in whole percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from .city import City
from .clock import rng_for
from .demand import CLOSE_HOUR, OPEN_HOUR, locker_moves
from .events import Event
from .sizes import SizeSpec

HOLD_DAYS = 3  # a parcel locker holds an uncollected parcel about three days
SWEEP_HOUR = 5  # local hour of the morning sweep; the lockers open at OPEN_HOUR
OCCUPANCY_NOISE = 0.02  # sensor error of one occupancy reading (share of the hub's space)
OCCUPANCY_STEP = 0.01  # readings are whole percent

STOCK_SCHEMA = {
    "date": pl.Date, "hub_id": pl.String, "neighbourhood_id": pl.String, "category": pl.String,
    "capacity_units": pl.Int64, "opening_units": pl.Int64, "returned_units": pl.Int64,
    "deposit_units": pl.Int64, "pickup_units": pl.Int64, "shortage_units": pl.Int64, "closing_units": pl.Int64,
}


@dataclass(frozen=True)
class DayStock:
    """One day of a hub's stock, summed over categories, for the occupancy readings."""

    opening: np.ndarray  # [hub] units before the sweep (yesterday's closing)
    returns: np.ndarray  # [hub, category] units taken out by the sweep
    closing: np.ndarray  # [hub] units after the day's last pickup
    space: np.ndarray  # [hub] the hub's total space (its categories' capacity summed)


@dataclass(frozen=True)
class StockLedger:
    """[day, hub, category] units, day 0 = the simulation's first day."""

    opening: np.ndarray
    returns: np.ndarray
    deposits: np.ndarray
    pickups: np.ndarray
    shortage: np.ndarray
    closing: np.ndarray
    capacity: np.ndarray  # [hub, category]

    def day(self, i: int) -> DayStock:
        return DayStock(self.opening[i].sum(axis=1), self.returns[i], self.closing[i].sum(axis=1),
                        self.capacity.sum(axis=1))

    def frame(self, city: City, start: date) -> pl.DataFrame:
        """The ground truth table: one row per day × hub × category."""
        n_days, h, c = self.opening.shape
        dates = pl.Series([start + timedelta(days=k) for k in range(n_days)], dtype=pl.Date)
        hub = np.tile(np.repeat(np.arange(h), c), n_days)
        cat = np.tile(np.arange(c), n_days * h)
        cols = {
            "date": dates.gather(np.repeat(np.arange(n_days), h * c)),
            "hub_id": pl.Series(city.hub_ids).gather(hub),
            "neighbourhood_id": pl.Series(city.nbh_ids[city.hub_nbh]).gather(hub),
            "category": pl.Series(city.cat_ids).gather(cat),
            "capacity_units": np.tile(self.capacity.reshape(-1), n_days),
        }
        for name, a in (("opening_units", self.opening), ("returned_units", self.returns),
                        ("deposit_units", self.deposits), ("pickup_units", self.pickups),
                        ("shortage_units", self.shortage), ("closing_units", self.closing)):
            cols[name] = a.reshape(-1)
        return pl.DataFrame(cols).cast(STOCK_SCHEMA)


def _serve(cohorts: np.ndarray, served: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Take `served` [hub, cat] units from `cohorts` [hub, cat, age] at random (without
    replacement), one age at a time: the units taken from an age are hypergeometric."""
    left = served.copy()
    rest = cohorts.sum(axis=2)
    out = cohorts.copy()
    for a in range(cohorts.shape[2]):
        good = cohorts[:, :, a]
        rest = rest - good
        take = rng.hypergeometric(good, rest, left) if a < cohorts.shape[2] - 1 else left
        out[:, :, a] -= take
        left = left - take
    return out


def stock_ledger(city: City, spec: SizeSpec, seed: int, start: date, days: int,
                 evs_on: dict[date, list[Event]]) -> StockLedger:
    """The true stock of `days` days from `start` (see the module docstring)."""
    h, c = len(city.hub_ids), len(city.cat_ids)
    shape = (days, h, c)
    led = {k: np.zeros(shape, dtype=np.int64) for k in ("opening", "returns", "deposits", "pickups", "shortage", "closing")}
    cohorts = np.zeros((h, c, HOLD_DAYS), dtype=np.int64)  # age 0 = deposited today
    for i in range(days):
        d = start + timedelta(days=i)
        pickups, deposits = locker_moves(city, spec, d, i, evs_on.get(d, []), rng_for(seed, i, "demand"))
        dep = np.zeros((h, c), dtype=np.int64)
        np.add.at(dep, (deposits.hub, deposits.cat), deposits.units)
        pick = np.zeros((h, c), dtype=np.int64)
        np.add.at(pick, (pickups.hub, pickups.cat), pickups.units)
        led["opening"][i] = cohorts.sum(axis=2)
        led["returns"][i] = cohorts[:, :, -1]
        cohorts = np.concatenate([dep[:, :, None], cohorts[:, :, :-1]], axis=2)
        available = cohorts.sum(axis=2)
        served = np.minimum(pick, available)
        cohorts = _serve(cohorts, served, rng_for(seed, i, "stock"))
        led["deposits"][i], led["pickups"][i] = dep, pick
        led["shortage"][i] = pick - served
        led["closing"][i] = cohorts.sum(axis=2)
    # int32 halves what the worker processes are sent; a day's units fit easily
    return StockLedger(capacity=city.capacity.astype(np.int64), **{k: v.astype(np.int32) for k, v in led.items()})


def occupancy_values(stock: DayStock, hub: np.ndarray, secs: np.ndarray, level_open: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """The occupancy each locker reports: `hub` and `secs` (local seconds after midnight) of
    each reading; `level_open` the hub's units at that moment of the opening hours (used
    between the lockers' opening and closing)."""
    after_sweep = stock.opening - stock.returns.sum(axis=1)
    units = np.select(
        [secs < SWEEP_HOUR * 3600, secs < OPEN_HOUR * 3600, secs >= CLOSE_HOUR * 3600],
        [stock.opening[hub], after_sweep[hub], stock.closing[hub]],
        np.maximum(level_open, 0),
    )
    ratio = units / np.maximum(stock.space[hub], 1) + rng.normal(0, OCCUPANCY_NOISE, hub.size)
    # + 0.0: a reading rounded up from below 0 is -0.0, which a file would spell "-0.0"
    return np.clip(np.round(ratio / OCCUPANCY_STEP) * OCCUPANCY_STEP, 0, 1).round(2) + 0.0


def level_during_day(after_sweep: np.ndarray, hub: np.ndarray, t: np.ndarray, moves_hub: np.ndarray,
                     moves_t: np.ndarray, moves_units: np.ndarray) -> np.ndarray:
    """The hub's units at each reading (`hub`, epoch `t`): the stock after the sweep plus
    the signed units (`moves_units`: deposits +, pickups −) of the hub's moves before it."""
    span = np.int64(1 << 20)  # > two days of seconds: keys sort by hub, then time
    base = int(min(t.min(initial=0), moves_t.min(initial=0)))
    keys = moves_hub.astype(np.int64) * span + (moves_t - base)
    order = np.argsort(keys, kind="stable")
    keys, cum = keys[order], np.r_[0, np.cumsum(moves_units[order])]
    at = np.searchsorted(keys, hub.astype(np.int64) * span + (t - base), side="left")
    first = np.searchsorted(keys, hub.astype(np.int64) * span, side="left")
    return after_sweep[hub] + cum[at] - cum[first]
