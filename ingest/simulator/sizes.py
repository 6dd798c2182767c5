"""City sizes: how big the simulated city is and how chatty its devices are.

Rates are per day. `tiny` keeps the end-to-end test fast (a few thousand telemetry rows
over 28 days); `large` is the benchmark city (>= 200 neighbourhoods, tens of millions of
telemetry rows over a year).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SizeSpec:
    name: str
    neighbourhoods: int
    hubs: int
    categories: int
    lockers_per_hub: int
    venues: int
    events_per_week: float  # across the city
    pickup_scale: float  # multiplies every category's base pickups per hub-day
    heartbeats_per_day: int  # per telemetry device (lockers and gateways)
    temperature_per_day: int  # per locker
    occupancy_per_day: int  # per locker
    battery_per_day: int  # per locker
    telemetry_files_per_day: int  # gateways deliver one file per hub group per day
    transit_scans_per_station: float
    event_scans_per_1000: float  # venue gate scans per 1,000 expected attendees
    txn_per_hub: float
    passes_initial: int
    passes_per_day: float
    clearing_operators: int
    suggested_days: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        name="tiny", neighbourhoods=4, hubs=6, categories=4, lockers_per_hub=1, venues=2,
        events_per_week=1.5, pickup_scale=0.3, heartbeats_per_day=4, temperature_per_day=2,
        occupancy_per_day=2, battery_per_day=1, telemetry_files_per_day=2,
        transit_scans_per_station=6.0, event_scans_per_1000=0.6, txn_per_hub=4.0,
        passes_initial=300, passes_per_day=4.0, clearing_operators=1, suggested_days=28,
    ),
    "small": SizeSpec(
        name="small", neighbourhoods=12, hubs=30, categories=6, lockers_per_hub=2, venues=3,
        events_per_week=3.0, pickup_scale=1.0, heartbeats_per_day=6, temperature_per_day=4,
        occupancy_per_day=4, battery_per_day=1, telemetry_files_per_day=4,
        transit_scans_per_station=60.0, event_scans_per_1000=2.0, txn_per_hub=12.0,
        passes_initial=5_000, passes_per_day=40.0, clearing_operators=2, suggested_days=120,
    ),
    "medium": SizeSpec(
        name="medium", neighbourhoods=60, hubs=150, categories=8, lockers_per_hub=2, venues=8,
        events_per_week=8.0, pickup_scale=1.5, heartbeats_per_day=12, temperature_per_day=8,
        occupancy_per_day=8, battery_per_day=2, telemetry_files_per_day=8,
        transit_scans_per_station=150.0, event_scans_per_1000=4.0, txn_per_hub=25.0,
        passes_initial=40_000, passes_per_day=150.0, clearing_operators=2, suggested_days=365,
    ),
    "large": SizeSpec(
        name="large", neighbourhoods=220, hubs=460, categories=10, lockers_per_hub=3, venues=20,
        events_per_week=20.0, pickup_scale=2.0, heartbeats_per_day=12, temperature_per_day=12,
        occupancy_per_day=12, battery_per_day=2, telemetry_files_per_day=16,
        transit_scans_per_station=60.0, event_scans_per_1000=3.0, txn_per_hub=15.0,
        passes_initial=200_000, passes_per_day=400.0, clearing_operators=3, suggested_days=365,
    ),
}
