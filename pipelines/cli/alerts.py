"""`civicflow alerts check`: every alert condition evaluated on the home, what is new sent.

The same check runs after each nightly run (pipelines/notify.py's sensors); the command is
for a cron without the daemon, for a look before a notifier is configured (`--dry-run`), and
for a replay at another time (`--now`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.options import HomeOpt, cli_console, print_table, refuse, settings_for

console = cli_console()
err_console = cli_console(stderr=True)
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "failure": "red"}


class _ConsoleLog:
    """A delivery's warnings, one dim line each on stderr (the logger the notifier expects)."""

    def warning(self, message: str) -> None:
        err_console.print(f"[yellow]{escape(message)}[/yellow]")

    info = error = warning


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        refuse(f"--now {value!r} is not an ISO date-time (e.g. 2026-02-06T07:00)")
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def check_after_run(settings) -> None:
    """The alerts check a `civicflow run` ends with (the daemon's sensors do it for scheduled runs): one line."""
    from pipelines.alerts.check import check_home
    from pipelines.alerts.config import AlertsFileError

    try:
        result = check_home(settings, log=_ConsoleLog())
    except AlertsFileError as exc:
        console.print(f"[yellow]alerts not checked: {escape(str(exc))}[/yellow]")
        return
    d = result.delivery
    if not result.alerts:
        console.print("Alerts: none hold.")
        return
    done = (f"{len(d.sent)} sent, {len(d.plan.repeated)} already sent, {len(d.failed)} not delivered" if result.notifier.configured
            else f"none sent: no notifier configured ({settings.notify.alerts_file})")
    console.print(f"Alerts: {len(result.alerts)} hold, {done} — civicflow alerts check --dry-run lists them", soft_wrap=True)


def register(app: typer.Typer) -> None:
    alerts_app = typer.Typer(help="Alerts for the data team: what holds now, sent once through the notifier.", no_args_is_help=True)

    @alerts_app.command("check")
    def check(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be sent; send nothing and record nothing.")] = False,
        now: Annotated[str | None, typer.Option("--now", help="Evaluate deadlines as of this time (ISO, UTC unless it has an offset); default: now.")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Evaluate every alert condition on the home and send the new ones (each says what to run next)."""
        from pipelines.alerts.check import check_home
        from pipelines.alerts.config import AlertsFileError

        settings = settings_for(home)
        as_of = _as_of(now)
        try:
            with console.status("Reading the home and evaluating the alert conditions…"):
                result = check_home(settings, now=as_of, dry_run=dry_run, log=_ConsoleLog())
        except AlertsFileError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
        plan, delivery = result.delivery.plan, result.delivery
        status = {a.key: "already sent" for a in plan.repeated}
        status |= {a.key: "would send" for a in plan.send} if result.sent_nothing else {}
        status |= {a.key: "sent" for a in delivery.sent} | {a.key: "[red]not delivered[/red]" for a in delivery.failed}
        table = Table(title=f"Alerts on {escape(str(settings.home.root))}", title_justify="left")
        for col in ("severity", "alert", "look further", "status"):
            table.add_column(col, overflow="fold")
        for a in result.alerts:
            style = SEVERITY_STYLE[a.severity]
            table.add_row(f"[{style}]{a.severity}[/{style}]", escape(a.body), escape(a.command), status.get(a.key, ""))
        if result.alerts:
            print_table(console, table)
        for url in result.notifier.unknown_urls():
            console.print(f"[red]alert URL {escape(url)} is not one apprise knows: nothing is sent there[/red]")
        for note in result.notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}")
        targets = ", ".join(result.notifier.describe()) or "none (set [notify] urls in the alerts file, or CIVICFLOW_NOTIFY_WEBHOOK / _COMMAND)"
        source = settings.notify.alerts_file if settings.notify.alerts_file.exists() else f"{settings.notify.alerts_file} (absent: defaults)"
        console.print(f"Alerts file: {escape(str(source))}\nNotifier: {escape(targets)}", soft_wrap=True)
        quiet = result.sent_nothing
        console.print(
            f"{len(result.alerts)} conditions hold: {len(plan.send) if quiet else len(delivery.sent)} {'would be sent' if quiet else 'sent'}, "
            f"{len(plan.repeated)} already sent" + ("" if quiet else f", {len(delivery.failed)} not delivered") + f"; {len(plan.cleared)} cleared."
        )

    app.add_typer(alerts_app, name="alerts")
