"""How often the history-based alerts (rejects, volume) fire on normal data: every day of a
home's published history is taken in turn as the latest and judged against the days before it,
with the alerts file's settings (defaults when there is none).

    python bench/bench_alerts.py HOME        # e.g. a home after `civicflow simulate --size tiny --days 35 && civicflow run`
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.alerts.config import load_alerts
from pipelines.alerts.norms import reject_alerts, volume_alerts
from pipelines.alerts.observe import observe
from pipelines.settings import Settings


def main(home: Path) -> None:
    settings = Settings.from_env(home=home)
    config = load_alerts(settings.notify.alerts_file)
    obs = observe(settings, config)
    days = sorted({v.day for v in obs.volumes})
    fired = []
    judged = days[config.min_history_days:]
    for day in judged:
        alerts = reject_alerts([r for r in obs.reject_days if r.day <= day], config)
        alerts += volume_alerts([v for v in obs.volumes if v.day <= day], config, "-", obs.event_days)
        fired += [(day, a.body) for a in alerts if a.key.endswith(day.isoformat())]
    series = len({(v.kind, v.name) for v in obs.volumes}) + len({r.contract for r in obs.reject_days})
    print(f"{len(judged)} days judged × {series} series (volume and rejects): {len(fired)} alerts")
    for _, body in fired:
        print(f"  {body}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/bench_alerts.py HOME")
    main(Path(sys.argv[1]))
