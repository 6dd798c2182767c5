"""One alerts check: read the home, evaluate every condition, send what is new.

`evaluate` is pure (observations in, alerts out); `check_home` is the edge the nightly run's
sensor and `civicflow alerts check` call; `notifier_for` builds the one notifier, which the
failure hook uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipelines.alerts import conditions, norms
from pipelines.alerts.config import AlertsConfig, load_alerts
from pipelines.alerts.model import Alert
from pipelines.alerts.notifier import LOG, Delivery, Notifier, deliver
from pipelines.alerts.observe import Observations, observe
from pipelines.settings import Settings


def evaluate(obs: Observations, now: datetime, config: AlertsConfig) -> list[Alert]:
    look = f"civicflow logs {obs.last_run_id[:8]}" if obs.last_run_id else "civicflow runs"
    alerts = [conditions.run_failed(r) for r in obs.failed_runs]
    alerts += [conditions.failed_check(c) for c in obs.failed_checks]
    if "source_late" in obs.evaluated:
        alerts += conditions.freshness_alerts(obs.last_delivery, now, config)
    alerts += norms.reject_alerts(obs.reject_days, config)
    alerts += norms.volume_alerts(obs.volumes, config, look, obs.event_days)
    alerts += conditions.settlement_alerts(obs.backlog, config)
    alerts += conditions.budget_alerts(obs.spends, config)
    return alerts


def notifier_for(settings: Settings, config: AlertsConfig | None = None) -> Notifier:
    config = config if config is not None else load_alerts(settings.notify.alerts_file)
    return Notifier(config.urls, settings.notify.webhook, settings.notify.command)


@dataclass
class CheckResult:
    alerts: list[Alert]
    delivery: Delivery
    notifier: Notifier
    notes: list[str] = field(default_factory=list)
    sent_nothing: bool = False  # a dry run, or no notifier configured: nothing sent, nothing recorded


def check_home(settings: Settings, now: datetime | None = None, dry_run: bool = False, log=LOG) -> CheckResult:
    """Evaluate every condition on the home and send the new alerts (only list them with `dry_run`
    or when no notifier is configured)."""
    config = load_alerts(settings.notify.alerts_file)
    obs = observe(settings, config)
    alerts = evaluate(obs, now or datetime.now(UTC), config)
    notifier = notifier_for(settings, config)
    quiet = dry_run or not notifier.configured  # with nowhere to send, record nothing: the first notifier gets them all
    delivery = deliver(alerts, notifier, settings.home.alerts_state, obs.evaluated, dry_run=quiet, log=log)
    return CheckResult(alerts, delivery, notifier, obs.notes, sent_nothing=quiet)
