"""Source contracts: what each landed file must hold, as data.

One contract per file kind. The simulator writes to them, the loader validates against
them, `docs/data-contracts.md` documents them. A contract names its natural key (the
de-duplication key across files and runs), the field whose local date is the row's
partition, and the share of bad rows above which a whole file is refused.

Time-zone rules (all sources): device and validator clocks write ISO-8601 local time
*with* its UTC offset; gateways and the clearing operator write UTC with a `Z`. The
loader stores every timestamp as naive UTC and derives `event_date`, the city's local
calendar date of the event (the partition operations plan by).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# The one source of the city's time zone: Dagster hands it to every dbt run as the city_tz
# var (pipelines/partitions.py dbt_vars); dbt_project.yml holds a test-checked copy for dbt
# run by hand. Python is the source because ingest derives event_date before dbt runs and a
# leaf module must not read project files at import.
CITY_TZ = "Europe/Amsterdam"

# Telemetry reading kinds, the unit each must carry and the value range that is possible.
READING_KINDS: dict[str, tuple[str, float, float]] = {
    "locker_deposit": ("item", 1, 50),
    "locker_pickup": ("item", 1, 50),
    "door": ("state", 0, 1),
    "occupancy": ("ratio", 0, 1),
    "heartbeat": ("none", 0, 0),
    "battery": ("percent", 0, 100),
    "temperature": ("celsius", -40, 70),
    "locker_return": ("item", 1, 50),  # uncollected items taken out of the locker by the morning sweep
}
DEMAND_KINDS = ("locker_deposit", "locker_pickup")
STOCK_KINDS = (*DEMAND_KINDS, "locker_return")  # the readings that move a locker's stock
# The plausible window of an event's timestamps: not before the city's services started, not
# more than a day ahead of the clock of the run loading it (a device clock set to 9999 or
# 1969 is quarantined, not loaded to blow up the daily marts).
SERVICE_START = date(2020, 1, 1)
MAX_DAYS_AHEAD = 1
# Batch expectations of the event sources. A day's volume swings with weekdays and city events
# (the simulated pass scans reach 3.6 × their median on a festival day, and fall to half of it
# on a quiet Sunday): the band is wide, and a day that lost most of its files falls out of it.
VOLUME_HISTORY_DAYS = 28
VOLUME_MIN_HISTORY = 7  # fewer earlier partitions than this: too little history to judge
EVENT_VOLUME_BAND = (0.3, 5.0)
EVENT_FRESH_WITHIN_DAYS = 1  # a day's file may close before its last events: the day before still counts
PASS_TYPES = ("transit", "event", "locker")
SCAN_RESULTS = ("accepted", "rejected")
ENTITLEMENTS = ("residency", "payment", "accessibility")
DEVICE_TYPES = ("locker", "validator", "payment_terminal", "gateway")


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str  # str | int | float | timestamp | date
    description: str
    required: bool = True
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    privacy: str = "public"  # public | quasi | identity
    # A `;`-separated list whose every token must be one of these (an empty value passes).
    subset_of: tuple[str, ...] | None = None
    # What a normal day of this field looks like, checked on each partition as a whole (rows can
    # each be valid while the day is not: every amount at the max, one kind of reading gone).
    daily_mean: tuple[float, float] | None = None  # band the day's mean lies in
    daily_median: tuple[float, float] | None = None  # band the day's median lies in
    daily_min_share: tuple[tuple[str, float], ...] = ()  # (value, least share of the day's rows)


@dataclass(frozen=True)
class Contract:
    name: str  # file kind, also the landing sub-folder and the raw table name
    source: str  # the business source it belongs to: telemetry | pass_scans | settlement | reference
    file_format: str  # jsonl | csv
    description: str
    fields: tuple[Field, ...]
    natural_key: tuple[str, ...]
    event_time: str | None  # field whose local date is the partition; None for reference data
    max_reject_ratio: float
    reference: bool = False  # reference files are snapshots: the newest replaces the table
    filename_glob: str = "*"
    extra: dict = field(default_factory=dict)
    # The file starts with a batch header stating its line count and the sum of this field over
    # its lines; a file that does not add up is refused whole. None: no header.
    batch_total_field: str | None = None
    # Per value of `kind`: the unit a reading must carry and the range of its `value`.
    reading_kinds: dict[str, tuple[str, float, float]] | None = None
    # Values of `kind` whose rows must name a `category`.
    category_required_for: tuple[str, ...] = ()
    # The device registry: every other source's device_id is checked against its table, so a
    # snapshot of it loading changes what the next files are checked against.
    device_registry: bool = False
    # Every timestamp field of a row lies in [earliest, the run's clock + days_ahead]; None: no window.
    earliest: date | None = None
    days_ahead: int | None = None
    # A partition's row count over the median of the source's previous VOLUME_HISTORY_DAYS
    # partitions lies in this band; None: volume not checked (reference snapshots).
    volume_band: tuple[float, float] | None = None
    # The latest event date a run loads is at most this many days before the run's day.
    fresh_within_days: int | None = None

    @property
    def table(self) -> str:
        return f"raw.{self.name}"

    @property
    def has_batch_header(self) -> bool:
        return self.batch_total_field is not None

    @property
    def clock_skew_threshold_s(self) -> float | None:
        """Seconds the device clock may be off the gateway's; None: the event time is taken as sent.

        Beyond it the row is flagged and the trusted receive time is its event time.
        """
        return self.extra.get("skew_threshold_s")

    @property
    def checks_devices(self) -> bool:
        """Event rows name a device that must be in the device registry."""
        return "device_id" in self.field_names and not self.reference

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def get(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"contract {self.name!r} has no field {name!r}")


TELEMETRY = Contract(
    name="telemetry",
    source="telemetry",
    file_format="jsonl",
    description=(
        "Device measurements from edge gateways, one JSON object per line, shaped like "
        "smart-data-models DeviceMeasurement (refDevice → device_id, controlledProperty → kind, "
        "numValue → value, unit, dateObserved → device_time)."
    ),
    fields=(
        Field("device_id", "str", "Device that measured (refDevice); must exist in reference `devices`."),
        Field("hub_id", "str", "Locker hub the device belongs to."),
        Field("seq", "int", "Per-device sequence number, increasing; with device_id the natural key.", min=0),
        Field("device_time", "timestamp", "Device clock time of the reading, local time with offset (dateObserved)."),
        Field("received_at", "timestamp", "Gateway receive time, UTC (Z)."),
        Field(
            "kind", "str", "Kind of reading (controlledProperty).", allowed=tuple(READING_KINDS),
            # every kind reports every day, but returns: a parcel is returned only once it has
            # waited its days, so a city's first days (and a quiet hub's) have none
            daily_min_share=tuple((k, 0.005) for k in READING_KINDS if k != "locker_return"),
        ),
        Field(
            "category",
            "str",
            "Item category, required for locker_deposit, locker_pickup and locker_return, empty otherwise.",
            required=False,
        ),
        Field("value", "float", "Reading value (numValue); range depends on kind.", unit="see kind"),
        Field("unit", "str", "Unit of value; must match the kind.", allowed=tuple(sorted({u for u, _, _ in READING_KINDS.values()}))),
    ),
    natural_key=("device_id", "seq"),
    event_time="device_time",
    max_reject_ratio=0.05,
    earliest=SERVICE_START,
    days_ahead=MAX_DAYS_AHEAD,
    volume_band=EVENT_VOLUME_BAND,
    fresh_within_days=EVENT_FRESH_WITHIN_DAYS,
    filename_glob="*.jsonl",
    reading_kinds=READING_KINDS,
    category_required_for=STOCK_KINDS,
    # received_at is the gateway's trusted clock (always within seconds of the event); a
    # device clock further than this from it is skewed: flag the row, use received_at.
    extra={"skew_threshold_s": 300},
)

PASS_SCANS = Contract(
    name="pass_scans",
    source="pass_scans",
    file_format="csv",
    description="Pass scans from transit validators, locker pickups and venue gates, CSV with a header row.",
    fields=(
        Field("scan_id", "str", "Unique scan identifier (natural key)."),
        Field("pass_id", "str", "Pseudonymous pass identifier.", privacy="quasi"),
        Field(
            "pass_type", "str", "Kind of pass scanned.", allowed=PASS_TYPES,
            daily_min_share=(("transit", 0.1), ("locker", 0.05)),  # event passes scan on event days only
        ),
        Field("location_id", "str", "Where the scan happened: a hub, station or venue id."),
        Field("device_id", "str", "Validator or locker that scanned; must exist in reference `devices`."),
        Field("scanned_at", "timestamp", "Validator clock time, local time with offset."),
        Field("result", "str", "Outcome of the scan.", allowed=SCAN_RESULTS, daily_min_share=(("accepted", 0.5),)),
        Field("reason", "str", "Why a scan was rejected; empty when accepted.", required=False),
        Field(
            "entitlements",
            "str",
            "Verified attributes applied, ';'-separated subset of residency;payment;accessibility.",
            required=False,
            subset_of=ENTITLEMENTS,
        ),
    ),
    natural_key=("scan_id",),
    event_time="scanned_at",
    max_reject_ratio=0.05,
    earliest=SERVICE_START,
    days_ahead=MAX_DAYS_AHEAD,
    volume_band=EVENT_VOLUME_BAND,
    fresh_within_days=EVENT_FRESH_WITHIN_DAYS,
    filename_glob="*.csv",
)

TRANSACTIONS = Contract(
    name="transactions",
    source="settlement",
    file_format="jsonl",
    description="Micro-payments taken by devices, one JSON object per line, cleared later in batches.",
    fields=(
        Field("txn_id", "str", "Transaction identifier (natural key)."),
        Field("device_id", "str", "Payment device; must exist in reference `devices`."),
        Field("pass_id", "str", "Pseudonymous pass that paid.", privacy="quasi"),
        Field(
            "amount_cents", "int", "Amount charged, in euro cents.", min=1, max=100_000, unit="EUR cent",
            daily_mean=(150, 3_000), daily_median=(100, 2_000),  # micro-payments: a few euros
        ),
        Field("currency", "str", "ISO currency.", allowed=("EUR",)),
        Field("txn_time", "timestamp", "Device clock time, local time with offset."),
    ),
    natural_key=("txn_id",),
    event_time="txn_time",
    max_reject_ratio=0.02,
    earliest=SERVICE_START,
    days_ahead=MAX_DAYS_AHEAD,
    volume_band=EVENT_VOLUME_BAND,
    fresh_within_days=EVENT_FRESH_WITHIN_DAYS,
    filename_glob="*.jsonl",
)

CLEARING = Contract(
    name="clearing",
    source="settlement",
    file_format="jsonl",
    description=(
        "Clearing batches from the clearing operator: line 1 is a header object "
        '{"record": "header", "batch_id", "line_count", "total_cents", "cleared_at"}; every other '
        'line is {"record": "line", ...} with the fields below. A file whose lines do not add up to '
        "its header count and sum is refused whole (a truncated or tampered batch)."
    ),
    fields=(
        Field("batch_id", "str", "Clearing batch identifier."),
        Field("line_no", "int", "Line number within the batch, from 1.", min=1),
        Field("txn_id", "str", "Device transaction this line settles."),
        Field(
            "amount_cents", "int", "Amount settled, in euro cents.", min=1, max=100_000, unit="EUR cent",
            daily_mean=(150, 3_000), daily_median=(100, 2_000),
        ),
        Field("settled_at", "timestamp", "Settlement time, UTC (Z)."),
    ),
    natural_key=("batch_id", "line_no"),
    event_time="settled_at",
    max_reject_ratio=0.0,
    earliest=SERVICE_START,
    days_ahead=MAX_DAYS_AHEAD,
    volume_band=EVENT_VOLUME_BAND,
    fresh_within_days=EVENT_FRESH_WITHIN_DAYS,
    filename_glob="*.jsonl",
    batch_total_field="amount_cents",
)

# Reference data: snapshots delivered as CSV in landing/reference/<name>/.
NEIGHBOURHOODS = Contract(
    name="neighbourhoods",
    source="reference",
    file_format="csv",
    description="The city's neighbourhoods.",
    fields=(
        Field("neighbourhood_id", "str", "Neighbourhood identifier."),
        Field("name", "str", "Display name."),
        Field("population", "int", "Residents.", min=0),
        Field("lat", "float", "Centroid latitude.", min=-90, max=90),
        Field("lon", "float", "Centroid longitude.", min=-180, max=180),
    ),
    natural_key=("neighbourhood_id",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

HUBS = Contract(
    name="hubs",
    source="reference",
    file_format="csv",
    description="Pickup-locker hubs (micro-fulfilment hubs).",
    fields=(
        Field("hub_id", "str", "Hub identifier."),
        Field("neighbourhood_id", "str", "Neighbourhood the hub serves."),
        Field("name", "str", "Display name."),
        Field("address", "str", "Street address (street and number), as printed on the pick list."),
        Field("lat", "float", "Latitude of the hub itself (not its neighbourhood's centroid).", min=-90, max=90),
        Field("lon", "float", "Longitude of the hub itself.", min=-180, max=180),
    ),
    natural_key=("hub_id",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

HUB_CAPACITY = Contract(
    name="hub_capacity",
    source="reference",
    file_format="csv",
    description="Units of each item category a hub can hold.",
    fields=(
        Field("hub_id", "str", "Hub identifier."),
        Field("category", "str", "Item category."),
        Field("capacity_units", "int", "Locker units available for the category.", min=0),
    ),
    natural_key=("hub_id", "category"),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

DEVICES = Contract(
    name="devices",
    source="reference",
    file_format="csv",
    description="Every device that may report: lockers, validators, payment terminals, gateways.",
    fields=(
        Field("device_id", "str", "Device identifier."),
        Field("device_type", "str", "Kind of device.", allowed=DEVICE_TYPES),
        Field("hub_id", "str", "Hub the device is installed at (empty for venue and station devices).", required=False),
        Field("location_id", "str", "Hub, station or venue where the device stands."),
        Field("neighbourhood_id", "str", "Neighbourhood of the location."),
    ),
    natural_key=("device_id",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
    device_registry=True,
)

CATEGORIES = Contract(
    name="categories",
    source="reference",
    file_format="csv",
    description="Item categories, with the costs the staging planner weighs.",
    fields=(
        Field("category", "str", "Category identifier."),
        Field("name", "str", "Display name."),
        Field("under_cost", "float", "Cost of one unit short at a hub (sent reactively from the depot).", min=0, unit="EUR"),
        Field("over_cost", "float", "Cost of one unit staged but not picked up (hauled back).", min=0, unit="EUR"),
    ),
    natural_key=("category",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

EVENTS = Contract(
    name="events",
    source="reference",
    file_format="csv",
    description="Events calendar: festivals, sports, concerts.",
    fields=(
        Field("event_id", "str", "Event identifier."),
        Field("name", "str", "Event name."),
        Field("kind", "str", "Kind of event.", allowed=("festival", "sports", "concert", "market")),
        Field("venue_neighbourhood_id", "str", "Neighbourhood of the venue."),
        Field("start_time", "timestamp", "Start, local time with offset."),
        Field("end_time", "timestamp", "End, local time with offset."),
        Field("expected_attendance", "int", "Expected attendance.", min=0),
    ),
    natural_key=("event_id",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

PASS_ONBOARDING = Contract(
    name="pass_onboarding",
    source="reference",
    file_format="csv",
    description="Pass issuance and the three verified attributes (identity-first onboarding).",
    fields=(
        Field("pass_id", "str", "Pseudonymous pass identifier.", privacy="quasi"),
        Field("pass_type", "str", "Kind of pass.", allowed=PASS_TYPES),
        Field("home_neighbourhood_id", "str", "Neighbourhood of residence.", privacy="quasi"),
        Field("birth_year", "int", "Holder's year of birth.", min=1900, max=2100, privacy="identity"),
        Field("issued_at", "timestamp", "When the pass was issued, local time with offset."),
        Field("residency_verified_at", "timestamp", "When residency was verified.", required=False),
        Field("payment_verified_at", "timestamp", "When payment ability was verified.", required=False),
        Field("accessibility_verified_at", "timestamp", "When an accessibility need was verified.", required=False),
    ),
    natural_key=("pass_id",),
    event_time=None,
    max_reject_ratio=0.0,
    reference=True,
    filename_glob="*.csv",
)

EVENT_CONTRACTS: tuple[Contract, ...] = (TELEMETRY, PASS_SCANS, TRANSACTIONS, CLEARING)
REFERENCE_CONTRACTS: tuple[Contract, ...] = (
    NEIGHBOURHOODS,
    HUBS,
    HUB_CAPACITY,
    DEVICES,
    CATEGORIES,
    EVENTS,
    PASS_ONBOARDING,
)
CONTRACTS: dict[str, Contract] = {c.name: c for c in EVENT_CONTRACTS + REFERENCE_CONTRACTS}


def landing_dir_for(contract: Contract) -> str:
    """Relative landing folder: `<name>/<YYYY-MM-DD>/` for event files, `reference/<name>/` for snapshots."""
    return f"reference/{contract.name}" if contract.reference else contract.name
