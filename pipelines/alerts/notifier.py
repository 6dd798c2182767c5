"""The one notifier every alert goes through: apprise's URLs (Slack, Teams, e-mail, JSON
webhooks, …, from the alerts file) and the settings' webhook (the alert's JSON by POST) and
command (the JSON on its standard input). A delivery that fails is logged, never raised: an
alert must not break the run or the check that raised it.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipelines.alerts.dedupe import DeliveryPlan, plan_delivery, sent_state
from pipelines.alerts.model import Alert

LOG = logging.getLogger("civicflow.alerts")
WEBHOOK_ATTEMPTS = 3


@dataclass(frozen=True)
class Notifier:
    urls: tuple[str, ...] = ()
    webhook: str | None = None
    command: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.urls or self.webhook or self.command)

    def describe(self) -> list[str]:
        """Where alerts go, with no secret in it (an apprise URL's scheme and host only)."""
        shown = [_redacted(u) for u in self.urls]
        return shown + ([f"webhook {_redacted(self.webhook)}"] if self.webhook else []) + ([f"command {shlex.split(self.command)[0]}"] if self.command else [])

    def unknown_urls(self) -> list[str]:
        """The URLs apprise cannot use (a typo, an unknown scheme), redacted: said before anything is sent."""
        import apprise

        return [_redacted(u) for u in self.urls if not apprise.Apprise().add(u)]

    def send(self, alert: Alert, log=LOG) -> bool:
        """Deliver `alert` everywhere; True when at least one target took it (and none is configured: False)."""
        results = []
        if self.urls:
            results.append(self._apprise(alert, log))
        body = json.dumps(alert.payload(), default=str)
        if self.webhook:
            results.append(self._webhook(body, log))
        if self.command:
            results.append(self._command(body, log))
        return any(results)

    def _apprise(self, alert: Alert, log) -> bool:
        import apprise

        ap = apprise.Apprise()
        for url in self.urls:
            if not ap.add(url):
                log.warning(f"alert URL {_redacted(url)} is not a URL apprise knows: skipped")
        if not len(ap):
            return False
        try:
            ok = bool(ap.notify(title=alert.title, body=alert.text, notify_type=alert.severity))
        except Exception as exc:  # a plugin's own bug must not stop the others
            log.warning(f"alert {alert.key} not delivered through apprise: {type(exc).__name__}: {exc}")
            return False
        if not ok:
            log.warning(f"alert {alert.key} not delivered to every apprise URL ({', '.join(_redacted(u) for u in self.urls)})")
        return ok

    def _webhook(self, body: str, log) -> bool:
        import httpx

        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                httpx.post(self.webhook, content=body, headers={"content-type": "application/json"}, timeout=10).raise_for_status()
                return True
            except httpx.HTTPError as exc:
                log.warning(f"notification to {_redacted(self.webhook)} not delivered (attempt {attempt + 1}/{WEBHOOK_ATTEMPTS}): {exc}")
        return False

    def _command(self, body: str, log) -> bool:
        try:
            subprocess.run(shlex.split(self.command), input=body, text=True, timeout=60, check=True)
            return True
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning(f"notification command {self.command!r} failed: {exc}")
            return False


def _redacted(url: str) -> str:
    """scheme://host/… — apprise URLs carry tokens and passwords in their user and path parts."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…" if rest else url


@dataclass
class Delivery:
    plan: DeliveryPlan
    sent: list[Alert] = field(default_factory=list)
    failed: list[Alert] = field(default_factory=list)


def deliver(alerts: list[Alert], notifier: Notifier, state_path: Path, evaluated: set[str] | None = None,
            dry_run: bool = False, log=LOG, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Delivery:
    """Send what is new of `alerts` and record it; with `dry_run`, only say what would be sent."""
    with sent_state(state_path, write=not dry_run) as state:
        plan = plan_delivery(alerts, state.entries, evaluated)
        result = Delivery(plan)
        if dry_run:
            return result
        state.clear(plan.cleared)
        for alert in plan.send:
            if notifier.send(alert, log):
                state.record(alert, now())
                result.sent.append(alert)
            else:
                result.failed.append(alert)
        return result
