"""Which delivery days a run may cover: those in the landing zone, from the partitions' start.

Apart from the nightly service (and free of Dagster) so that `civicflow run --date` outside
the partitions is refused at once, before Dagster, dbt or the instance are even imported.
"""

from __future__ import annotations

from datetime import date

from pipelines.home import Home


class NoDeliveries(ValueError):
    """The landing zone holds no delivered file to run on."""


class OutsidePartitions(ValueError):
    """A requested day is not a partition: before the start date or after the last delivered day."""


def landing_days(home: Home, first_day: date | None = None) -> tuple[date, date] | None:
    """First and last delivery day of the files in the landing zone (the default range of
    `run`, and the end of the partitions): valid date folders of known sources only, from
    `first_day` (the partitions' start) to tomorrow; what else lies there is misplaced."""
    from ingest.landing import DayWindow, scan

    days = scan(home.landing, DayWindow.ending_tomorrow(first_day)).days()
    return (days[0], days[-1]) if days else None


def check_days(days: tuple[date, date], start: date, delivered: tuple[date, date] | None) -> None:
    """Refuse, in one line, a range that is not all partitions (before anything runs)."""
    last = delivered[1] if delivered else None
    span = f"partitions run from {start} (CIVICFLOW_START_DATE) to " + (f"{last}, the last delivered day" if last else f"{start} (nothing delivered yet)")
    for day in days:
        if day < start or day > (last or start):
            raise OutsidePartitions(f"{day} is not a partition: {span}")


def days_to_run(home: Home, start: date, days: tuple[date, date] | None) -> tuple[tuple[date, date], tuple[date, date] | None]:
    """The days a run covers (`days`, or every delivered day) and the delivered range; refused
    with `NoDeliveries` or `OutsidePartitions`."""
    delivered = landing_days(home, start)
    if days is None and delivered is None:
        raise NoDeliveries(f"no delivered files in {home.landing}: run `civicflow simulate` or deliver files first")
    days = days or delivered
    check_days(days, start, delivered)
    return days, delivered
