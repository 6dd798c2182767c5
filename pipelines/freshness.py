"""Freshness: every asset of the nightly job must be rebuilt each night, before a deadline.

One rule, two readers: the `FreshnessPolicy` attached to every asset (the daemon evaluates
it; the UI shows a stale asset as failing) and `civicflow status`, which applies the same
rule to the instance's records so it works without the daemon. A raw source that delivered
nothing still gets its nightly materialization (with 0 rows loaded): staleness here means the
pipeline did not run; a silent source shows in `status` as its last delivery day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import dagster as dg

from ingest.contracts import CITY_TZ

DEADLINE = "06:00"  # city-local time the night's run must be done by (settings.schedule.fresh_by)
WINDOW = timedelta(hours=24)  # a materialization in the 24 h before the deadline counts


def policy(deadline: str = DEADLINE) -> dg.FreshnessPolicy:
    import dagster as dg  # here, not at import: `civicflow status` applies the rule without dagster

    hour, minute = (int(x) for x in deadline.split(":"))
    return dg.FreshnessPolicy.cron(deadline_cron=f"{minute} {hour} * * *", lower_bound_delta=WINDOW, timezone=CITY_TZ)


def with_freshness(assets: Sequence[dg.AssetsDefinition], deadline: str = DEADLINE) -> list[dg.AssetsDefinition]:
    """The same assets, every spec carrying the nightly freshness policy."""
    import dagster as dg

    nightly = policy(deadline)
    return list(dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=nightly), assets))


def last_deadline(now: datetime, deadline: str = DEADLINE) -> datetime:
    """The most recent deadline tick at or before `now` (city time)."""
    local = now.astimezone(ZoneInfo(CITY_TZ))
    hour, minute = (int(x) for x in deadline.split(":"))
    tick = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return tick if tick <= local else tick - timedelta(days=1)


def is_fresh(last_materialized: datetime | None, now: datetime, deadline: str = DEADLINE) -> bool:
    """Fresh when materialized within the window before the last deadline, or after it."""
    if last_materialized is None:
        return False
    return last_materialized >= last_deadline(now, deadline) - WINDOW
