"""Passes and pass scans: the onboarding register and what validators, lockers and gates scan.

Passes are issued every day (plus an initial population in the year before the start); a
scan only ever uses a pass issued before the scan's day, so every scanned `pass_id` is in
the `pass_onboarding` snapshot. Verified attributes get a timestamp some time after issue;
the snapshot shows only verifications that happened by its cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ingest.contracts import ENTITLEMENTS, PASS_TYPES

from .city import TRANSIT_WEEKLY, City
from .clock import day_bounds, fmt_local, is_holiday, local_seconds_to_epoch, rng_for
from .demand import LockerMoves
from .events import Event
from .sizes import SizeSpec

PASS_TYPE_P = np.array([0.6, 0.15, 0.25])  # transit, event, locker
# probability the attribute gets verified at all, mean delay (days) after issue
VERIFY = {"residency": (0.85, 3.0), "payment": (0.7, 1.0), "accessibility": (0.08, 10.0)}
TRANSIT_HOURS = np.array([1.2, 2.5, 2.2, 1.0, 0.7, 0.7, 0.8, 0.8, 0.8, 1.0, 1.6, 2.4, 2.0, 1.2, 0.8, 0.6, 0.4])
REJECT_REASONS = ("expired", "not_entitled", "unreadable")
REJECT_RATE = 0.03
SCAN_COLUMNS = ("scan_id", "pass_id", "pass_type", "location_id", "device_id", "scanned_at", "result", "reason", "entitlements")


@dataclass
class Passes:
    """Column arrays of every pass issued so far (verification epochs; -1 = never)."""

    pass_id: pl.Series
    ptype: np.ndarray
    home: np.ndarray
    birth_year: np.ndarray
    issued: np.ndarray
    verified: np.ndarray  # [pass, 3] epochs in ENTITLEMENTS order

    @staticmethod
    def concat(parts: list["Passes"]) -> "Passes":
        return Passes(
            pl.concat([p.pass_id for p in parts]),
            *(np.concatenate([getattr(p, f) for p in parts]) for f in list(Passes.__dataclass_fields__)[1:]),
        )


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _ids(day_index: int, n: int) -> pl.Series:
    """Pseudonymous, unique pass ids: a 64-bit bijective mix of (day, number), in hex."""
    x = (np.uint64(day_index + 2) * np.uint64(10_000_000) + np.arange(n, dtype=np.uint64)).astype(np.uint64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(29)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((x[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.intp)
    chars = np.concatenate([np.full((n, 2), [ord("P"), ord("-")], dtype=np.uint8), _HEX[nibbles]], axis=1)
    return pl.Series("pass_id", np.ascontiguousarray(chars).view("S18").ravel()).cast(pl.String)


def issue_passes(city: City, spec: SizeSpec, seed: int, start: date, day_index: int) -> Passes:
    """Passes issued on day `day_index` (-1: the initial population, issued in the year before)."""
    rng = rng_for(seed, day_index, "passes")
    if day_index < 0:
        n = spec.passes_initial
        s0, _ = day_bounds(start)
        issued = s0 - rng.integers(1, 365 * 86_400, n)
    else:
        from datetime import timedelta

        d = start + timedelta(days=day_index)
        n = int(rng.poisson(spec.passes_per_day))
        issued = local_seconds_to_epoch(d, rng.integers(7 * 3600, 22 * 3600, n))
    issued = np.sort(issued)
    verified = np.full((n, 3), -1, dtype=np.int64)
    for j, att in enumerate(ENTITLEMENTS):
        p, mean_days = VERIFY[att]
        yes = rng.random(n) < p
        delay = (rng.exponential(mean_days, n) * 86_400).astype(np.int64) + 60
        verified[:, j] = np.where(yes, issued + delay, -1)
    return Passes(
        pass_id=_ids(day_index, n),
        ptype=rng.choice(3, size=n, p=PASS_TYPE_P),
        home=rng.choice(len(city.nbh_ids), size=n, p=city.population / city.population.sum()),
        birth_year=rng.integers(1940, 2009, n),
        issued=issued.astype(np.int64),
        verified=verified,
    )


def onboarding_frame(city: City, passes: Passes, cutoff: int) -> pl.DataFrame:
    """The `pass_onboarding` snapshot as of epoch `cutoff`."""
    keep = passes.issued <= cutoff
    df = pl.DataFrame(
        {
            "pass_id": passes.pass_id.filter(pl.Series(keep)),
            "pass_type": pl.Series(PASS_TYPES).gather(passes.ptype[keep]),
            "home_neighbourhood_id": pl.Series(city.nbh_ids).gather(passes.home[keep]),
            "birth_year": passes.birth_year[keep].astype(np.int64),
            "_issued": passes.issued[keep],
            **{f"_{a}": passes.verified[keep, j] for j, a in enumerate(ENTITLEMENTS)},
        }
    )
    ver = [
        pl.when((pl.col(f"_{a}") >= 0) & (pl.col(f"_{a}") <= cutoff))
        .then(fmt_local(f"_{a}"))
        .otherwise(None)
        .alias(f"{a}_verified_at")
        for a in ENTITLEMENTS
    ]
    return df.with_columns(fmt_local("_issued").alias("issued_at"), *ver).select(
        "pass_id", "pass_type", "home_neighbourhood_id", "birth_year", "issued_at",
        *[f"{a}_verified_at" for a in ENTITLEMENTS],
    )


def _pick(rng: np.random.Generator, passes: Passes, eligible_n: int, ptype: int, k: int) -> np.ndarray:
    pool = np.flatnonzero(passes.ptype[:eligible_n] == ptype)
    if pool.size == 0:
        pool = np.arange(eligible_n)
    return pool[rng.integers(0, pool.size, k)]


def scans_day(
    city: City,
    spec: SizeSpec,
    d: date,
    pickups: LockerMoves,
    pickup_locker: np.ndarray,
    evs: list[Event],
    passes: Passes,
    eligible_n: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Every pass scan of day `d`; `_file` 0 = lockers file, 1 = validators (stations, venues)."""
    # locker pickups: the locker scans the pass just before the door opens
    lk_t = pickups.t - rng.integers(3, 15, pickups.t.size)
    lk_loc = pickups.hub
    # transit validators
    nbh_lift = np.zeros(len(city.nbh_ids))
    for ev in evs:
        nbh_lift[ev.nbh] += ev.attendance / 20_000
    mean = (
        spec.transit_scans_per_station * city.population / 15_000 * TRANSIT_WEEKLY[d.weekday()]
        * (0.7 if is_holiday(d) else 1.0) * (1 + 0.5 * nbh_lift)
    )
    per_station = rng.poisson(mean)
    st = np.repeat(np.arange(len(city.station_ids)), per_station)
    p = TRANSIT_HOURS / TRANSIT_HOURS.sum()
    st_t = local_seconds_to_epoch(d, (6 + rng.choice(17, st.size, p=p)) * 3600 + rng.integers(0, 3600, st.size))
    st_dev = 2 * st + rng.integers(0, 2, st.size)
    # venue gates: arrivals from 90 minutes before the start to 60 minutes after
    ev_parts_t, ev_parts_v = [], []
    for ev in evs:
        n = rng.poisson(ev.attendance * spec.event_scans_per_1000 / 1000)
        secs = np.clip(ev.start_hour * 3600 + rng.integers(-5400, 3600, n), 6 * 3600, 23 * 3600 - 1)
        ev_parts_t.append(local_seconds_to_epoch(d, secs))
        ev_parts_v.append(np.full(n, ev.venue))
    ev_t = np.concatenate(ev_parts_t) if ev_parts_t else np.zeros(0, np.int64)
    ev_v = np.concatenate(ev_parts_v) if ev_parts_v else np.zeros(0, np.int64)
    ev_dev = 2 * ev_v + rng.integers(0, 2, ev_v.size)

    n_lk, n_st, n_ev = lk_t.size, st.size, ev_t.size
    ptype = np.concatenate([np.full(n_lk, 2), np.zeros(n_st, int), np.ones(n_ev, int)])
    t = np.concatenate([lk_t, st_t, ev_t]).astype(np.int64)
    pidx = np.empty(ptype.size, dtype=np.int64)
    for ty in range(3):
        m = ptype == ty
        pidx[m] = _pick(rng, passes, eligible_n, ty, int(m.sum()))
    loc = pl.concat([
        pl.Series(city.hub_ids).gather(lk_loc), pl.Series(city.station_ids).gather(st), pl.Series(city.venue_ids).gather(ev_v)
    ])
    dev = pl.concat([
        pl.Series(city.locker_ids).gather(pickup_locker), pl.Series(city.validator_ids).gather(st_dev),
        pl.Series(city.gate_ids).gather(ev_dev),
    ])
    rejected = np.r_[np.zeros(n_lk, bool), rng.random(n_st + n_ev) < REJECT_RATE]
    reason_idx = np.where(rejected, rng.integers(0, 3, t.size), 3)
    ver = passes.verified[pidx]
    ent = (ver >= 0) & (ver < t[:, None]) & ~rejected[:, None]

    df = pl.DataFrame(
        {
            "pass_id": passes.pass_id.gather(pidx),
            "pass_type": pl.Series(PASS_TYPES).gather(ptype),
            "location_id": loc,
            "device_id": dev,
            "_t": t,
            "result": pl.Series(["accepted", "rejected"]).gather(rejected.astype(np.int8)),
            "reason": pl.Series([*REJECT_REASONS, None], dtype=pl.String).gather(reason_idx),
            **{f"_e{j}": ent[:, j] for j in range(3)},
            "_file": np.r_[np.zeros(n_lk, np.int32), np.ones(n_st + n_ev, np.int32)],
        }
    )
    ents = pl.concat_str(
        [pl.when(pl.col(f"_e{j}")).then(pl.lit(a)) for j, a in enumerate(ENTITLEMENTS)],
        separator=";",
        ignore_nulls=True,
    )
    df = (
        df.sort("_t", "device_id", "pass_id")
        .with_columns(
            scan_id=pl.format("S{}-{}", pl.lit(f"{d:%Y%m%d}"), pl.int_range(pl.len()).cast(pl.String).str.zfill(7)),
            scanned_at=fmt_local("_t"),
            entitlements=pl.when(ents == "").then(None).otherwise(ents),
            _fault=pl.lit(None, dtype=pl.String),
            _valid=pl.lit(True),
        )
        .drop("_e0", "_e1", "_e2")
    )
    return df
