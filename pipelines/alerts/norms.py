"""Conditions against a series' own history: a source's rejects, a source's or a mart's volume.

The latest day of each series is compared with the `window_days` before it: rejects with their
median (a past spike does not raise the norm), volume with median ± k·MAD of the same weekday
when there are enough of them (weekday and weekend volumes differ), else of every day, with the
spread taken over every day of the window.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from pipelines.alerts.config import AlertsConfig
from pipelines.alerts.model import Alert

MAD_TO_SIGMA = 1.4826  # the MAD of a normal sample times this estimates its standard deviation
MIN_SAME_WEEKDAY = 3


@dataclass(frozen=True)
class RejectDay:
    """What one delivery day of a contract brought: rows read, rows quarantined, files refused."""

    contract: str
    day: date
    rows: int
    quarantined: int
    refused_files: int

    @property
    def ratio(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class VolumeDay:
    name: str  # a contract, or a mart's table
    kind: str  # "source" | "mart"
    day: date
    value: float


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    median: float
    points: int
    same_weekday: bool


def _window(days: dict[date, object], latest: date, config: AlertsConfig) -> list[date]:
    start = latest - timedelta(days=config.window_days)
    return sorted(d for d in days if start <= d < latest)


def reject_alerts(history: list[RejectDay], config: AlertsConfig) -> list[Alert]:
    """The latest day of each contract whose reject ratio or refused files stand well above its norm."""
    by_contract: dict[str, dict[date, RejectDay]] = defaultdict(dict)
    for r in history:
        by_contract[r.contract][r.day] = r
    alerts = []
    for contract, days in sorted(by_contract.items()):
        latest = max(days)
        window = [days[d] for d in _window(days, latest, config)]
        if len(window) < config.min_history_days:
            continue
        today = days[latest]
        norm_ratio = statistics.median(r.ratio for r in window)
        norm_refused = statistics.median(r.refused_files for r in window)
        reasons = []
        if today.quarantined >= config.reject_min_rows and today.ratio > max(config.reject_factor * norm_ratio, config.reject_min_ratio):
            reasons.append(f"{today.quarantined:,} of {today.rows:,} rows quarantined ({today.ratio:.1%}, its {config.window_days}-day norm {norm_ratio:.1%})")
        if today.refused_files > norm_refused + config.refused_files_margin:
            reasons.append(f"{today.refused_files} files refused (its {config.window_days}-day norm {norm_refused:g} a day)")
        if reasons:
            alerts.append(Alert(
                key=f"rejects:{contract}:{latest.isoformat()}", level="high", severity="warning",
                title=f"civicflow: {contract} rejects well above its norm on {latest.isoformat()}",
                body=f"Source {contract}, delivery day {latest.isoformat()}: " + "; ".join(reasons) + ".",
                command=f"civicflow ingest quarantine --contract {contract}",
                details={"contract": contract, "day": latest.isoformat(), "ratio": today.ratio, "norm_ratio": norm_ratio,
                         "refused_files": today.refused_files, "norm_refused_files": norm_refused},
            ))
    return alerts


def expected_interval(history: dict[date, float], day: date, config: AlertsConfig) -> Interval | None:
    """The interval `day`'s value should fall in, from the window before it (None: too little history).

    Centre: the median of the same weekday (with `by_weekday` and 3 of them at least), else of
    every day. Spread: the MAD of every day of the window around its own weekday's median (28
    points, not 4: stable), never below the Poisson spread of a count (its square root) or
    `min_relative_spread` of the centre."""
    window = _window(history, day, config)
    if len(window) < config.min_history_days:
        return None
    by_weekday: dict[int, list[float]] = defaultdict(list)
    for d in window:
        by_weekday[d.weekday()].append(history[d])
    overall = statistics.median(history[d] for d in window)

    def centre(weekday: int) -> float:
        same = by_weekday.get(weekday, [])
        return statistics.median(same) if config.volume_by_weekday and len(same) >= MIN_SAME_WEEKDAY else overall

    mid = centre(day.weekday())
    mad = statistics.median(abs(history[d] - centre(d.weekday())) for d in window)
    spread = max(MAD_TO_SIGMA * mad, math.sqrt(max(mid, 0.0)), config.volume_min_relative_spread * abs(mid), 1.0)
    same_weekday = config.volume_by_weekday and len(by_weekday.get(day.weekday(), [])) >= MIN_SAME_WEEKDAY
    return Interval(mid - config.volume_k * spread, mid + config.volume_k * spread, mid, len(by_weekday[day.weekday()]) if same_weekday else len(window), same_weekday)


def volume_alerts(volumes: list[VolumeDay], config: AlertsConfig, command: str, event_days: dict[date, str] | None = None) -> list[Alert]:
    """The latest day of each series whose volume falls outside the interval its history predicts.

    A high volume on the day of a large city event (`event_days`: day → its name) is what the
    event brings, not a fault: only a low one alerts then."""
    series: dict[tuple[str, str], dict[date, float]] = defaultdict(dict)
    for v in volumes:
        series[(v.kind, v.name)][v.day] = v.value
    alerts = []
    for (kind, name), history in sorted(series.items()):
        latest = max(history)
        interval = expected_interval(history, latest, config)
        value = history[latest]
        if interval is None or interval.low <= value <= interval.high:
            continue
        direction = "low" if value < interval.low else "high"
        if direction == "high" and latest in (event_days or {}):
            continue
        basis = f"the last {interval.points} {latest.strftime('%A')}s" if interval.same_weekday else f"the last {interval.points} days"
        what = "Source" if kind == "source" else "Mart"
        alerts.append(Alert(
            key=f"volume:{kind}:{name}:{latest.isoformat()}", level=direction, severity="warning",
            title=f"civicflow: {name} volume {'fell' if direction == 'low' else 'rose'} outside its usual range on {latest.isoformat()}",
            body=f"{what} {name}, {latest.isoformat()}: {value:,.0f}, outside {max(interval.low, 0):,.0f}–{interval.high:,.0f} "
                 f"(median {interval.median:,.0f} of {basis}, ± {config.volume_k:g}·MAD).",
            command=command,
            details={"kind": kind, "name": name, "day": latest.isoformat(), "value": value, "low": interval.low, "high": interval.high},
        ))
    return alerts
