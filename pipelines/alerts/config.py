"""The alerts file (`<home>/alerts.toml`, or CIVICFLOW_ALERTS_FILE): where alerts go and when
they fire. Every key is optional; a missing file means the defaults below (and no apprise URL:
only the settings' webhook and command receive alerts). docs/operations.md shows the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ingest.contracts import CITY_TZ


@dataclass(frozen=True)
class MartVolume:
    """A mart's daily volume: `measure` (an SQL aggregate) per `date_column`."""

    table: str
    date_column: str
    measure: str = "count(*)"


# The series the forecasts model. (A mart whose last day is still filling, like the settlement
# reconciliation before the next clearing batch, would alert every night.)
DEFAULT_MARTS = (MartVolume("marts.neighbourhood_demand_daily", "demand_date", "sum(units)"),)


@dataclass(frozen=True)
class AlertsConfig:
    urls: tuple[str, ...] = ()  # apprise URLs: slack://…, msteams://…, mailtos://…, json://host:port/path, …
    timezone: str = CITY_TZ
    # Freshness: day D's files of a source are due by its deadline (city time) on day D+1.
    default_deadline: str = "06:00"
    deadlines: dict[str, str] = field(default_factory=dict)  # contract → "HH:MM"
    # Budgets: the shares of a team's daily and monthly budget that alert, in %.
    budget_levels: tuple[int, ...] = (50, 80, 100)
    # Rejects: the latest delivery day against the contract's own previous window_days.
    window_days: int = 28
    min_history_days: int = 7
    reject_factor: float = 3.0  # reject ratio above factor × its norm …
    reject_min_ratio: float = 0.01  # … and above this ratio …
    reject_min_rows: int = 10  # … and this many rows at least (one bad row of a small file is no spike)
    refused_files_margin: int = 1  # refused files above the norm's maximum + margin
    # Volume: outside median ± k·MAD of the same weekday (or every day) of the window.
    volume_k: float = 5.0
    volume_by_weekday: bool = True
    volume_min_relative_spread: float = 0.05  # the MAD is never taken below this share of the median
    marts: tuple[MartVolume, ...] = DEFAULT_MARTS
    event_attendance: int = 10_000  # a day with an event this large (raw.events) is not a high-volume alert
    # Settlement: unsettled transactions older than this many hours.
    # Settlement: transactions not cleared this many hours after they were taken, among those of
    # the data's last lookback days (older ones are long-standing write-offs `status` lists).
    settlement_max_age_hours: float = 24.0
    settlement_lookback_days: int = 7
    settlement_min_transactions: int = 5

    def deadline(self, contract: str) -> str:
        return self.deadlines.get(contract, self.default_deadline)


# The file's tables → the fields they set (a table's key is the field's name unless mapped).
SECTIONS: dict[str, dict[str, str]] = {
    "notify": {"urls": "urls"},
    "freshness": {"default_deadline": "default_deadline", "deadlines": "deadlines", "timezone": "timezone"},
    "budget": {"levels": "budget_levels"},
    "rejects": {"window_days": "window_days", "min_history_days": "min_history_days", "factor": "reject_factor",
                "min_ratio": "reject_min_ratio", "min_rows": "reject_min_rows", "refused_files_margin": "refused_files_margin"},
    "volume": {"k": "volume_k", "by_weekday": "volume_by_weekday", "min_relative_spread": "volume_min_relative_spread", "marts": "marts",
               "event_attendance": "event_attendance"},
    "settlement": {"max_age_hours": "settlement_max_age_hours", "lookback_days": "settlement_lookback_days",
                   "min_transactions": "settlement_min_transactions"},
}


class AlertsFileError(ValueError):
    """The alerts file is malformed; the message names the file and the key."""


def _hhmm(value: object, where: str) -> str:
    try:
        hour, minute = (int(x) for x in str(value).split(":"))
    except ValueError:
        raise AlertsFileError(f"{where}: {value!r} is not a time HH:MM") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise AlertsFileError(f"{where}: {value!r} is not a time HH:MM")
    return f"{hour:02d}:{minute:02d}"


def parse_alerts(data: dict, source: str = "alerts file") -> AlertsConfig:
    """The config a parsed TOML document describes; unknown tables or keys are refused."""
    values: dict[str, object] = {}
    known = {f.name: f for f in fields(AlertsConfig)}
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise AlertsFileError(f"{source}: unknown table [{section}] (known: {', '.join(SECTIONS)})")
        for key, value in table.items():
            name = SECTIONS[section].get(key)
            if name is None:
                raise AlertsFileError(f"{source}: unknown key {section}.{key} (known: {', '.join(SECTIONS[section])})")
            values[name] = _coerce(name, value, f"{source}: {section}.{key}", known[name].default)
    return AlertsConfig(**values)


def _coerce(name: str, value: object, where: str, default: object) -> object:
    if name == "marts":
        if not isinstance(value, list) or not all(isinstance(m, dict) and {"table", "date_column"} <= set(m) for m in value):
            raise AlertsFileError(f"{where}: a list of {{table, date_column, measure}} tables")
        return tuple(MartVolume(str(m["table"]), str(m["date_column"]), str(m.get("measure", "count(*)"))) for m in value)
    if name == "deadlines":
        if not isinstance(value, dict):
            raise AlertsFileError(f"{where}: a table of contract = \"HH:MM\"")
        return {str(k): _hhmm(v, f"{where}.{k}") for k, v in value.items()}
    if name == "default_deadline":
        return _hhmm(value, where)
    if isinstance(default, tuple):
        if not isinstance(value, list):
            raise AlertsFileError(f"{where}: a list")
        return tuple(value)
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise AlertsFileError(f"{where}: {value!r} is not a {expected.__name__}")
    return value


def load_alerts(path: Path) -> AlertsConfig:
    """The alerts file at `path`, or the defaults when there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return AlertsConfig()
    try:
        return parse_alerts(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as exc:
        raise AlertsFileError(f"{path}: {exc}") from None
