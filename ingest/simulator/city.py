"""The simulated city's reference data: neighbourhoods, hubs, devices, categories, venues.

Built from (size, seed) alone, so every run and every `--append` sees the same city.
Arrays are index-aligned (hub i is `hub_ids[i]`); the CSV snapshots come from
`reference_frames`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .clock import rng_for
from .sizes import SizeSpec

# id, name, base pickups per hub-day, mean units per pickup, weekly profile,
# holiday multiplier, event sensitivity, under_cost, over_cost (EUR per unit)
CATEGORY_CATALOGUE: tuple[tuple, ...] = (
    ("parcels", "Parcels", 3.0, 1.3, "weekday", 0.35, 0.15, 4.0, 1.2),
    ("groceries", "Groceries", 2.2, 2.6, "weekend", 1.15, 0.9, 6.5, 2.8),
    ("pharmacy", "Pharmacy", 0.9, 1.2, "weekday", 0.5, 0.1, 14.0, 1.6),
    ("event_gear", "Event gear", 0.04, 1.6, "weekend", 0.9, 12.0, 3.5, 2.2),
    ("meal_kits", "Meal kits", 1.4, 1.8, "weekend", 1.3, 0.5, 5.0, 3.5),
    ("electronics", "Electronics", 0.15, 1.1, "weekday", 0.6, 0.1, 9.0, 1.0),
    ("books", "Books", 0.7, 1.4, "weekday", 0.8, 0.2, 2.5, 0.6),
    ("returns", "Returns", 1.0, 1.1, "weekday", 0.4, 0.05, 2.0, 0.4),
    ("flowers", "Flowers", 0.25, 1.5, "weekend", 2.5, 0.8, 4.0, 3.0),
    ("repair_parts", "Repair parts", 0.04, 1.2, "weekday", 0.5, 0.0, 7.5, 0.8),
)
# Monday..Sunday
WEEKLY_PROFILES = {
    "weekday": np.array([1.15, 1.12, 1.08, 1.10, 1.12, 0.80, 0.55]),
    "weekend": np.array([0.85, 0.88, 0.90, 0.98, 1.15, 1.35, 1.10]),
}
TRANSIT_WEEKLY = np.array([1.1, 1.1, 1.1, 1.1, 1.05, 0.75, 0.6])

_PREFIX = ("Noord", "Oost", "Zuid", "West", "Oud", "Nieuw", "Hoog", "Laag", "Binnen", "Buiten", "Groot", "Klein")
_SUFFIX = ("dam", "wijk", "veld", "haven", "markt", "poort", "kade", "hof", "dorp", "gracht", "plein", "buurt",
           "meer", "berg", "dijk", "laan", "park", "waard", "zand", "bos")

CITY_LAT, CITY_LON = 52.37, 4.90
_STREETS = ("Kerkstraat", "Stationsweg", "Marktplein", "Havenkade", "Molenweg", "Schoolstraat", "Dorpsstraat",
            "Parklaan", "Lindenlaan", "Brugstraat", "Nieuwstraat", "Julianalaan", "Sluisweg", "Beukenlaan",
            "Raadhuisplein", "Veerstraat")
# A hub stands within about 500 m of its neighbourhood's centroid (neighbourhoods are ~1.3 km apart).
HUB_SPREAD_LAT, HUB_SPREAD_LON = 0.0045, 0.007


@dataclass(frozen=True)
class City:
    # neighbourhoods
    nbh_ids: np.ndarray
    nbh_names: list[str]
    population: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    growth: np.ndarray  # yearly demand trend per neighbourhood
    neighbours: list[np.ndarray]  # nearby neighbourhoods (event spill-over)
    affinity: np.ndarray  # [nbh, category] taste multiplier
    # hubs
    hub_ids: np.ndarray
    hub_nbh: np.ndarray
    hub_weight: np.ndarray
    hub_lat: np.ndarray  # the hub's own location, near its neighbourhood's centroid
    hub_lon: np.ndarray
    hub_address: list[str]  # street and number
    capacity: np.ndarray  # [hub, category] units
    # categories
    cat_ids: list[str]
    cat_names: list[str]
    cat_base: np.ndarray
    cat_basket: np.ndarray
    cat_weekly: np.ndarray  # [category, 7]
    cat_holiday: np.ndarray
    cat_event: np.ndarray
    cat_under: np.ndarray
    cat_over: np.ndarray
    # devices
    locker_ids: np.ndarray  # hub-major: locker j of hub h is h * lockers_per_hub + j
    gateway_ids: np.ndarray  # one per hub
    terminal_ids: np.ndarray  # one payment terminal per hub
    station_ids: np.ndarray  # one transit station per neighbourhood
    validator_ids: np.ndarray  # two per station: station s owns 2s, 2s+1
    venue_ids: np.ndarray
    venue_nbh: np.ndarray
    gate_ids: np.ndarray  # two per venue: venue v owns 2v, 2v+1
    terminal_operator: np.ndarray  # clearing operator index per terminal
    operator_ids: list[str]

    @property
    def telemetry_device_ids(self) -> np.ndarray:
        """Lockers then gateways: the index space used by the telemetry generator."""
        return np.concatenate([self.locker_ids, self.gateway_ids])

    @property
    def telemetry_device_hub(self) -> np.ndarray:
        lph = len(self.locker_ids) // len(self.hub_ids)
        return np.concatenate([np.repeat(np.arange(len(self.hub_ids)), lph), np.arange(len(self.hub_ids))])


def _names(n: int) -> list[str]:
    out = []
    base = len(_PREFIX) * len(_SUFFIX)
    for i in range(n):
        name = _PREFIX[i % len(_PREFIX)] + _SUFFIX[(i // len(_PREFIX)) % len(_SUFFIX)]
        out.append(name if i < base else f"{name} {i // base + 1}")
    return out


def _hub_sites(seed: int, size: str, nbh_lat: np.ndarray, nbh_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each hub's latitude, longitude and street address, near its neighbourhood's centroid.
    Drawn from a stream of their own, so the rest of the city (and every figure measured on
    it) stays what it was before hubs had sites."""
    rng = rng_for(seed, -1, f"hub-sites:{size}")
    h = len(nbh_lat)
    lat = np.round(nbh_lat + np.clip(rng.normal(0, HUB_SPREAD_LAT / 2, h), -HUB_SPREAD_LAT, HUB_SPREAD_LAT), 5)
    lon = np.round(nbh_lon + np.clip(rng.normal(0, HUB_SPREAD_LON / 2, h), -HUB_SPREAD_LON, HUB_SPREAD_LON), 5)
    streets = rng.integers(0, len(_STREETS), h)
    numbers = rng.integers(1, 200, h)
    return lat, lon, [f"{_STREETS[s]} {n}" for s, n in zip(streets, numbers)]


def build_city(spec: SizeSpec, seed: int) -> City:
    rng = rng_for(seed, -1, f"city:{spec.name}")
    n = spec.neighbourhoods
    nbh_ids = np.array([f"N{i + 1:03d}" for i in range(n)])
    population = np.round(rng.lognormal(np.log(16_000), 0.45, n)).astype(np.int64)
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.arange(n) % side, np.arange(n) // side
    lat = np.round(CITY_LAT + (gy - side / 2) * 0.012 + rng.normal(0, 0.002, n), 5)
    lon = np.round(CITY_LON + (gx - side / 2) * 0.019 + rng.normal(0, 0.003, n), 5)
    growth = rng.uniform(-0.05, 0.35, n)
    dist = (lat[:, None] - lat[None, :]) ** 2 + ((lon[:, None] - lon[None, :]) * 0.61) ** 2
    np.fill_diagonal(dist, np.inf)
    k = min(3, n - 1)
    neighbours = [np.argsort(dist[i], kind="stable")[:k] for i in range(n)]

    cats = CATEGORY_CATALOGUE[: spec.categories]
    c = len(cats)
    affinity = rng.lognormal(0.0, 0.3, (n, c))

    extra = spec.hubs - n
    assert extra >= 0, "a size needs at least one hub per neighbourhood"
    per_nbh = 1 + rng.multinomial(extra, population / population.sum())
    hub_nbh = np.repeat(np.arange(n), per_nbh)
    h = len(hub_nbh)
    hub_ids = np.array([f"H{i + 1:04d}" for i in range(h)])
    hub_weight = rng.lognormal(0.0, 0.25, h)
    hub_lat, hub_lon, hub_address = _hub_sites(seed, spec.name, lat[hub_nbh], lon[hub_nbh])
    cat_base = np.array([x[2] for x in cats])
    # Capacity: comfortably above a normal day, below an event day for sensitive categories.
    mean_day = cat_base[None, :] * spec.pickup_scale * hub_weight[:, None] * affinity[hub_nbh] * (
        population[hub_nbh, None] / 15_000
    ) * np.array([x[3] for x in cats])[None, :]
    capacity = np.maximum(4, np.ceil(mean_day * 2.5 + 3)).astype(np.int64)

    lph = spec.lockers_per_hub
    locker_ids = np.array([f"LK-{hid}-{j + 1}" for hid in hub_ids for j in range(lph)])
    gateway_ids = np.array([f"GW-{hid}" for hid in hub_ids])
    terminal_ids = np.array([f"PT-{hid}" for hid in hub_ids])
    station_ids = np.array([f"ST-{nid}" for nid in nbh_ids])
    validator_ids = np.array([f"VL-{nid}-{j + 1}" for nid in nbh_ids for j in range(2)])
    venue_nbh = np.sort(rng.choice(n, size=min(spec.venues, n), replace=False))
    venue_ids = np.array([f"VN-{nbh_ids[i]}" for i in venue_nbh])
    gate_ids = np.array([f"VG-{nbh_ids[i]}-{j + 1}" for i in venue_nbh for j in range(2)])
    operator_ids = [f"ACQ{i + 1}" for i in range(spec.clearing_operators)]
    terminal_operator = np.arange(h) % spec.clearing_operators

    return City(
        nbh_ids=nbh_ids, nbh_names=_names(n), population=population, lat=lat, lon=lon, growth=growth,
        neighbours=neighbours, affinity=affinity,
        hub_ids=hub_ids, hub_nbh=hub_nbh, hub_weight=hub_weight, capacity=capacity,
        hub_lat=hub_lat, hub_lon=hub_lon, hub_address=hub_address,
        cat_ids=[x[0] for x in cats], cat_names=[x[1] for x in cats], cat_base=cat_base,
        cat_basket=np.array([x[3] for x in cats]),
        cat_weekly=np.stack([WEEKLY_PROFILES[x[4]] for x in cats]),
        cat_holiday=np.array([x[5] for x in cats]), cat_event=np.array([x[6] for x in cats]),
        cat_under=np.array([x[7] for x in cats]), cat_over=np.array([x[8] for x in cats]),
        locker_ids=locker_ids, gateway_ids=gateway_ids, terminal_ids=terminal_ids,
        station_ids=station_ids, validator_ids=validator_ids, venue_ids=venue_ids, venue_nbh=venue_nbh,
        gate_ids=gate_ids, terminal_operator=terminal_operator, operator_ids=operator_ids,
    )


def reference_frames(city: City, lockers_per_hub: int) -> dict[str, pl.DataFrame]:
    """Static reference snapshots (events and pass onboarding are built per run window)."""
    h = len(city.hub_ids)
    nbh = pl.DataFrame(
        {
            "neighbourhood_id": city.nbh_ids,
            "name": city.nbh_names,
            "population": city.population,
            "lat": city.lat,
            "lon": city.lon,
        }
    )
    hubs = pl.DataFrame(
        {
            "hub_id": city.hub_ids,
            "neighbourhood_id": city.nbh_ids[city.hub_nbh],
            "name": [f"{city.nbh_names[city.hub_nbh[i]]} hub {i + 1}" for i in range(h)],
            "address": city.hub_address,
            "lat": city.hub_lat,
            "lon": city.hub_lon,
        }
    )
    cap = pl.DataFrame(
        {
            "hub_id": np.repeat(city.hub_ids, len(city.cat_ids)),
            "category": np.tile(np.array(city.cat_ids), h),
            "capacity_units": city.capacity.reshape(-1),
        }
    )
    hub_of_locker = np.repeat(np.arange(h), lockers_per_hub)
    dev_rows = []
    for ids, dtype, hub_idx in (
        (city.locker_ids, "locker", hub_of_locker),
        (city.gateway_ids, "gateway", np.arange(h)),
        (city.terminal_ids, "payment_terminal", np.arange(h)),
    ):
        dev_rows.append(
            pl.DataFrame(
                {
                    "device_id": ids,
                    "device_type": [dtype] * len(ids),
                    "hub_id": city.hub_ids[hub_idx],
                    "location_id": city.hub_ids[hub_idx],
                    "neighbourhood_id": city.nbh_ids[city.hub_nbh[hub_idx]],
                }
            )
        )
    station_of_validator = np.repeat(np.arange(len(city.station_ids)), 2)
    venue_of_gate = np.repeat(np.arange(len(city.venue_ids)), 2)
    for ids, loc, nbh_idx in (
        (city.validator_ids, city.station_ids[station_of_validator], station_of_validator),
        (city.gate_ids, city.venue_ids[venue_of_gate], city.venue_nbh[venue_of_gate]),
    ):
        dev_rows.append(
            pl.DataFrame(
                {
                    "device_id": ids,
                    "device_type": ["validator"] * len(ids),
                    "hub_id": pl.Series([None] * len(ids), dtype=pl.String),
                    "location_id": loc,
                    "neighbourhood_id": city.nbh_ids[nbh_idx],
                }
            )
        )
    cats = pl.DataFrame(
        {
            "category": city.cat_ids,
            "name": city.cat_names,
            "under_cost": city.cat_under,
            "over_cost": city.cat_over,
        }
    )
    return {
        "neighbourhoods": nbh,
        "hubs": hubs,
        "hub_capacity": cap,
        "devices": pl.concat(dev_rows),
        "categories": cats,
    }
