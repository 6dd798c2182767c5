"""The alert conditions on facts read elsewhere: failed runs and checks, late sources, budgets,
settlement backlog. Each takes plain data and returns the `Alert`s that hold; the statistical
ones (rejects, volume against their history) are in `norms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pipelines.alerts.config import AlertsConfig
from pipelines.alerts.model import Alert, Severity


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    job: str
    partitions: str
    step: str = ""  # the first failed step, when known
    assets: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    check: str
    description: str
    run_id: str = ""


@dataclass(frozen=True)
class TeamSpend:
    team: str
    day: date
    day_spent: float
    day_budget: float
    month_spent: float
    month_budget: float


@dataclass(frozen=True)
class SettlementBacklog:
    transactions: int  # unsettled transactions older than the target
    amount_cents: int
    oldest_hours: float | None
    as_of: datetime | None  # the data's own clock: the newest transaction or settlement


def run_failed(run: FailedRun) -> Alert:
    """A failed run, once per run: the failure hook and `alerts check` name it alike."""
    where = f"step {run.step}" + (f" ({', '.join(run.assets)})" if run.assets else "") if run.step else "a step"
    days = f" for {run.partitions}" if run.partitions else ""
    return Alert(
        key=f"run_failed:{run.run_id}", level="failed", severity="failure",
        title=f"civicflow: the {run.job} run{days} failed",
        body=f"The {run.job} run {run.run_id[:8]}{days} failed in {where}" + (f": {run.error}" if run.error else "."),
        command=f"civicflow logs {run.run_id[:8]}",
        details={"run_id": run.run_id, "job": run.job, "step": run.step, "assets": list(run.assets), "partition": run.partitions, "error": run.error},
    )


def failed_check(check: FailedCheck) -> Alert:
    return Alert(
        key=f"check_failed:{check.asset}:{check.check}", level="failed", severity="failure",
        title=f"civicflow: blocking check {check.check} failed on {check.asset}",
        body=f"The blocking check {check.check} on {check.asset} failed: {check.description}",
        command=f"civicflow logs {check.run_id[:8]}" if check.run_id else "civicflow status",
        details={"asset": check.asset, "check": check.check, "description": check.description, "run_id": check.run_id},
    )


def due_day(now: datetime, deadline: str, tz: str) -> date:
    """The latest delivery day whose files are due by `now`: day D is due at `deadline` on D+1."""
    local = now.astimezone(ZoneInfo(tz))
    hour, minute = (int(x) for x in deadline.split(":"))
    return local.date() - timedelta(days=1 if local.time() >= time(hour, minute) else 2)


def freshness_alerts(last_delivery: dict[str, date | None], now: datetime, config: AlertsConfig) -> list[Alert]:
    """Every source (contract) whose last delivered day is before the day due by now."""
    alerts = []
    for contract in sorted(set(last_delivery) | set(config.deadlines)):
        last, deadline = last_delivery.get(contract), config.deadline(contract)
        due = due_day(now, deadline, config.timezone)
        if last is not None and last >= due:
            continue
        missing = (last + timedelta(days=1)) if last is not None else due
        since = f"its last delivered day is {last.isoformat()}" if last is not None else "it never delivered a file"
        alerts.append(Alert(
            key=f"source_late:{contract}", level="late", severity="warning",
            title=f"civicflow: {contract} has delivered no file for {missing.isoformat()}",
            body=f"Source {contract} has no file for {missing.isoformat()}, due by {deadline} ({config.timezone}) the day after; {since}.",
            command="civicflow status",
            details={"contract": contract, "last_delivered": last.isoformat() if last else None, "due_day": due.isoformat(), "deadline": deadline},
        ))
    return alerts


def _budget_severity(level: int) -> Severity:
    return "failure" if level >= 100 else "warning" if level >= 80 else "info"


def budget_alerts(spends: list[TeamSpend], config: AlertsConfig) -> list[Alert]:
    """A team at or past each level (50/80/100 %) of its daily and its monthly budget."""
    alerts = []
    for s in spends:
        for period, spent, budget, name in (("day", s.day_spent, s.day_budget, s.day.isoformat()), ("month", s.month_spent, s.month_budget, s.day.strftime("%Y-%m"))):
            if budget <= 0:
                continue
            share = 100 * spent / budget
            reached = [lvl for lvl in sorted(config.budget_levels) if share >= lvl]
            if not reached:
                continue
            level = reached[-1]
            alerts.append(Alert(
                key=f"budget:{s.team}:{period}:{name}", level=f"{level}%", severity=_budget_severity(level),
                title=f"civicflow: team {s.team} has used {level} % of its {'daily' if period == 'day' else 'monthly'} budget",
                body=f"Team {s.team} has spent {spent:,.1f} of its {budget:,.0f} cost units for {name} ({share:.0f} %)"
                     + (": its queries are refused until the budget resets." if level >= 100 else "."),
                command="civicflow budget --by day" if period == "day" else "civicflow budget",
                details={"team": s.team, "period": period, "spent": spent, "budget": budget, "share_pct": round(share, 1)},
            ))
    return alerts


def settlement_alerts(backlog: SettlementBacklog | None, config: AlertsConfig) -> list[Alert]:
    if backlog is None or backlog.transactions < config.settlement_min_transactions:
        return []
    oldest = f", the oldest {backlog.oldest_hours:.0f} h" if backlog.oldest_hours is not None else ""
    as_of = f" (as of {backlog.as_of:%Y-%m-%d %H:%M} UTC, the newest transaction or settlement)" if backlog.as_of else ""
    return [Alert(
        key="settlement_backlog", level=f"over {config.settlement_max_age_hours:g} h", severity="warning",
        title=f"civicflow: {backlog.transactions} transactions unsettled past {config.settlement_max_age_hours:g} h",
        body=f"{backlog.transactions} transactions (EUR {backlog.amount_cents / 100:,.2f}) are not cleared {config.settlement_max_age_hours:g} h after they were taken{oldest}{as_of}.",
        command="civicflow status",
        details={"transactions": backlog.transactions, "amount_cents": backlog.amount_cents, "oldest_hours": backlog.oldest_hours},
    )]
