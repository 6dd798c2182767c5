"""Device telemetry of one day: locker moves (deposits, pickups, the morning sweep's
returns), doors, occupancy (read from the true stock, stock.py), heartbeats, battery,
temperature.

Returns one frame with the contract's columns (already formatted) plus private columns
(prefixed `_`) the delivery and ground-truth steps use: true time, device index, file index.
Demand kinds are a minority of rows, as in real telemetry.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from ingest.contracts import READING_KINDS

from .city import City
from .clock import day_bounds, fmt_local, fmt_utc, local_seconds_to_epoch
from .demand import LockerMoves
from .sizes import SizeSpec
from .stock import SWEEP_HOUR, DayStock, level_during_day, occupancy_values

KINDS = tuple(READING_KINDS)
K_DEPOSIT, K_PICKUP, K_DOOR, K_OCC, K_HEART, K_BATT, K_TEMP, K_RETURN = range(8)
SEQ_PER_DAY = 1_000_000  # seq = day_index * SEQ_PER_DAY + reading number of the device that day
TELEMETRY_COLUMNS = ("device_id", "hub_id", "seq", "device_time", "received_at", "kind", "category", "value", "unit")


def telemetry_day(
    city: City,
    spec: SizeSpec,
    d: date,
    day_index: int,
    pickups: LockerMoves,
    deposits: LockerMoves,
    skew: np.ndarray,
    rng: np.random.Generator,
    stock: DayStock,
) -> tuple[pl.DataFrame, np.ndarray]:
    """(frame, locker index of every pickup). `skew`: device clock offset (s) per telemetry
    device; `stock`: the day's true stock (the sweep's returns, what occupancy reports)."""
    lph = spec.lockers_per_hub
    n_hubs = len(city.hub_ids)
    n_lockers = n_hubs * lph
    ds, de = day_bounds(d)
    span = de - ds

    pk_dev = pickups.hub * lph + rng.integers(0, lph, pickups.hub.size)
    dp_dev = deposits.hub * lph + rng.integers(0, lph, deposits.hub.size)
    # the morning sweep: one locker_return reading (1 unit) per unit that waited too long
    rt_hub, rt_cat = np.divmod(np.repeat(np.arange(stock.returns.size), stock.returns.reshape(-1)), stock.returns.shape[1])
    rt_dev = rt_hub * lph + rng.integers(0, lph, rt_hub.size)
    rt_t = local_seconds_to_epoch(d, SWEEP_HOUR * 3600 + rng.integers(0, 3600, rt_hub.size))
    moves_dev = np.concatenate([pk_dev, dp_dev, rt_dev])
    moves_t = np.concatenate([pickups.t, deposits.t, rt_t])
    n_moves = moves_t.size

    lockers = np.arange(n_lockers)
    all_dev = np.arange(n_lockers + n_hubs)
    # periodic readings: heartbeat on every device, the rest on lockers
    hb_int = span // spec.heartbeats_per_day
    hb_dev = np.repeat(all_dev, spec.heartbeats_per_day)
    hb_t = ds + np.tile(np.arange(spec.heartbeats_per_day) * hb_int, all_dev.size) + np.repeat(
        rng.integers(0, hb_int, all_dev.size), spec.heartbeats_per_day
    )
    occ_dev = np.repeat(lockers, spec.occupancy_per_day)
    occ_t = ds + rng.integers(0, span, occ_dev.size)
    bat_dev = np.repeat(lockers, spec.battery_per_day)
    bat_t = ds + rng.integers(0, span, bat_dev.size)
    tmp_dev = np.repeat(lockers, spec.temperature_per_day)
    tmp_t = ds + rng.integers(0, span, tmp_dev.size)

    occ_hub = occ_dev // lph
    level = level_during_day(
        stock.opening - stock.returns.sum(axis=1), occ_hub, occ_t,
        np.concatenate([deposits.hub, pickups.hub]), np.concatenate([deposits.t, pickups.t]),
        np.concatenate([deposits.units, -pickups.units]),
    )
    occ_v = occupancy_values(stock, occ_hub, occ_t - ds, level, rng)
    bat_v = np.round(np.clip(rng.normal(85, 8, bat_dev.size), 5, 100))
    season = -6.0 * np.cos(2 * np.pi * (d.timetuple().tm_yday - 15) / 365.25)
    tmp_v = np.round(10 + season + 5 * np.sin(2 * np.pi * ((tmp_t - ds) / 3600.0 - 9) / 24) + rng.normal(0, 1.5, tmp_dev.size), 1)

    dev = np.concatenate([pk_dev, dp_dev, rt_dev, moves_dev, moves_dev, occ_dev, hb_dev, bat_dev, tmp_dev])
    t = np.concatenate([
        pickups.t, deposits.t, rt_t,
        moves_t - rng.integers(2, 11, n_moves), moves_t + rng.integers(5, 41, n_moves),
        occ_t, hb_t, bat_t, tmp_t,
    ])
    kind = np.concatenate([
        np.full(pickups.t.size, K_PICKUP), np.full(deposits.t.size, K_DEPOSIT), np.full(rt_t.size, K_RETURN),
        np.full(2 * n_moves, K_DOOR), np.full(occ_t.size, K_OCC), np.full(hb_t.size, K_HEART),
        np.full(bat_t.size, K_BATT), np.full(tmp_t.size, K_TEMP),
    ]).astype(np.int8)
    cat = np.concatenate([pickups.cat, deposits.cat, rt_cat, np.full(dev.size - n_moves, -1)])
    value = np.concatenate([
        pickups.units, deposits.units, np.ones(rt_t.size), np.ones(n_moves), np.zeros(n_moves), occ_v,
        np.zeros(hb_t.size), bat_v, tmp_v,
    ]).astype(np.float64)

    recv = t + rng.integers(1, 5, t.size)
    devt = t + rng.integers(-2, 3, t.size) + skew[dev]

    # seq: readings numbered per device in time order. Packed int64 keys sort much faster
    # than lexsort; t and recv stay within [ds - 1 h, ds + 2 days) so 18 bits hold them.
    base = ds - 3600
    by_device = np.argsort((dev.astype(np.int64) << 24) | ((t - base) << 3) | kind, kind="stable")
    dev_s = dev[by_device]
    starts = np.flatnonzero(np.r_[True, dev_s[1:] != dev_s[:-1]])
    rank = np.empty(dev.size, dtype=np.int64)
    rank[by_device] = np.arange(dev.size) - np.repeat(starts, np.diff(np.r_[starts, dev.size]))
    assert dev.size == 0 or (int(rank.max()) < 1 << 16 and int(dev.max()) < 1 << 14), "sort key overflow"
    seq = day_index * SEQ_PER_DAY + rank

    hub = city.telemetry_device_hub[dev]
    file_idx = hub % spec.telemetry_files_per_day
    # file order (the gateway's): by file, then receive time, device, seq; sorted here so the
    # strings are built once, in their final order, and every file is a contiguous slice
    order = np.argsort(
        (file_idx.astype(np.int64) << 50) | ((recv - base) << 30) | (dev.astype(np.int64) << 16) | rank,
        kind="stable",
    )
    dev, t, kind, cat, value, recv, devt, seq, hub, file_idx = (
        a[order] for a in (dev, t, kind, cat, value, recv, devt, seq, hub, file_idx)
    )
    n_cat = len(city.cat_ids)
    cat_idx = np.where(cat < 0, n_cat, cat)
    units = [READING_KINDS[k][0] for k in KINDS]
    skewed = skew[dev] != 0
    df = pl.DataFrame(
        {
            "device_id": pl.Series(city.telemetry_device_ids).gather(dev),
            "hub_id": pl.Series(city.hub_ids).gather(hub),
            "seq": seq.astype(np.int64),
            "_devt": devt.astype(np.int64),
            "_recv": recv.astype(np.int64),
            "kind": pl.Series(KINDS).gather(kind),
            "category": pl.Series(list(city.cat_ids) + [None], dtype=pl.String).gather(cat_idx),
            "value": value,
            "unit": pl.Series(units).gather(kind),
            "_t": t.astype(np.int64),
            "_dev": dev.astype(np.int32),
            "_hub": hub.astype(np.int32),
            "_cat": cat.astype(np.int32),
            "_file": file_idx.astype(np.int32),
            "_fault": pl.Series(["clock_skew", None], dtype=pl.String).gather((~skewed).astype(np.int8)),
        }
    )
    df = df.with_columns(device_time=fmt_local("_devt"), received_at=fmt_utc("_recv"), _valid=pl.lit(True))
    return df, pk_dev
