"""The landing sensor: new files in the landing zone launch the nightly job for their day.

It looks only at the file system (DESIGN.md: the daemon and sensors never open the
warehouse). The cursor is the newest modification time it has acted on, so each new file is
seen once; the job itself is idempotent (SHA-256 manifest), so a file seen twice costs a
no-op run, never a double load. A file delivered late for a day already built requests that
delivery day's partition, and dbt then rebuilds every event date the file touched.
"""

import json
from datetime import date
from pathlib import Path

import dagster as dg

from ingest.landing import delivery_date


def new_deliveries(landing: Path, after_ns: int, until: date | None = None) -> tuple[dict[date, int], int, bool]:
    """Delivery days with files modified after `after_ns`; the mtime to resume after; whether reference data changed.

    Files delivered after `until` (the last partition: the partitions end at the data and
    reach a new day when the code location reloads) are left for a later tick: not counted,
    and the mtime returned stays below theirs so they are seen again."""
    days: dict[date, int] = {}
    newest, reference_changed = after_ns, False
    pending: int | None = None
    if not landing.exists():
        return days, newest, reference_changed
    for path in landing.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        mtime = path.stat().st_mtime_ns
        if mtime <= after_ns:
            continue
        day = delivery_date(path)
        if day is not None and until is not None and day > until:
            pending = mtime if pending is None else min(pending, mtime)
            continue
        newest = max(newest, mtime)
        if day is None:
            reference_changed = True
        else:
            days[day] = days.get(day, 0) + 1
    if pending is not None:
        newest = max(after_ns, min(newest, pending - 1))
    return days, newest, reference_changed


def build_landing_sensor(job, landing: Path, partitions: dg.DailyPartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        job=job,
        minimum_interval_seconds=60,
        description="Launches the nightly job for the delivery day of every new file in the landing zone.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext):
        after = json.loads(context.cursor)["mtime_ns"] if context.cursor else 0
        keys = set(partitions.get_partition_keys())
        until = date.fromisoformat(partitions.get_last_partition_key()) if keys else None
        days, newest, reference_changed = new_deliveries(landing, after, until)
        requested = {d.isoformat() for d in days if d.isoformat() in keys}
        if reference_changed and not requested and keys:
            requested.add(partitions.get_last_partition_key())  # a new snapshot: rebuild the latest day
        skipped = sorted(d.isoformat() for d in days if d.isoformat() not in keys)
        if skipped:
            context.log.warning(f"files delivered on days outside the partitions were not requested: {skipped}")
        context.update_cursor(json.dumps({"mtime_ns": newest}))
        if not requested:
            return dg.SkipReason(f"no new files in {landing}")
        return [dg.RunRequest(run_key=f"{day}@{newest}", partition_key=day) for day in sorted(requested)]

    return landing_sensor
