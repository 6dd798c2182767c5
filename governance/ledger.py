"""The budget ledger: reserve the estimate before running, settle the actual after.

The process that serves queries is the only writer of governance.duckdb, so the team's spend
lives in its memory: settled totals per team and day (loaded from the file once, then kept in
step by `settle`) plus the reservations of the queries running now. Check-and-reserve happens
under the state lock, so parallel queries of a team cannot together pass its budget: each sees
the others' reservations, which also count against the team's concurrency limit.

A reservation is not written to the file: a query in flight when the process dies is charged
nothing either way (before, its row was released at the next start). The ledger row is written
when the query ends — settled with its actual cost, or released at 0 when it failed — in the
same transaction as its audit row (the caller wraps both in `state.transaction()`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

from governance.policy import Refusal
from governance.rules import TeamRules
from governance.state import GovernanceState


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Spend:
    team: str
    day_spent: float
    month_spent: float
    in_flight: int


@dataclass(frozen=True)
class Reservation:
    entry_id: str
    team: str
    key_name: str | None
    day: date
    estimate: float
    created_at: datetime


@dataclass
class _Book:
    """Settled cost (plus reservations of a process that died before this code ran) per
    (team, day) and (team, first day of the month)."""

    day: defaultdict[tuple[str, date], float]
    month: defaultdict[tuple[str, date], float]

    def add(self, team: str, day: date, amount: float) -> None:
        self.day[(team, day)] += amount
        self.month[(team, day.replace(day=1))] += amount


def _book(state: GovernanceState) -> _Book:
    """Callers hold state.lock."""
    book = state.cache.get("ledger")
    if book is None:
        book = _Book(defaultdict(float), defaultdict(float))
        for team, day, total in state.con.execute(
            "SELECT team, day, sum(coalesce(actual, estimate)) FROM ledger WHERE status IN ('reserved', 'settled') GROUP BY team, day"
        ).fetchall():
            book.add(team, day, float(total))
        state.cache["ledger"] = book
    return book


def spend(state: GovernanceState, team: str, day: date | None = None) -> Spend:
    """Settled actuals plus open reservations, for the day and its month."""
    day = day or _now().date()
    month = day.replace(day=1)
    with state.lock:
        book = _book(state)
        running = [r for r in state.in_flight.values() if r.team == team and r.day.replace(day=1) == month]
        day_spent = book.day.get((team, day), 0.0) + sum(r.estimate for r in running if r.day == day)
        month_spent = book.month.get((team, month), 0.0) + sum(r.estimate for r in running)
    return Spend(team, day_spent, month_spent, len(running))


def reserve(state: GovernanceState, rules: TeamRules, key_name: str, estimate: float, now: datetime | None = None) -> str:
    now = now or _now()
    if estimate > rules.per_query_cap:
        raise Refusal("per_query_cap", f"estimated cost {estimate:.4f} units is above the per-query cap of {rules.per_query_cap:g} units for team {rules.team}")
    with state.lock:
        s = spend(state, rules.team, now.date())
        if s.in_flight >= rules.concurrency:
            raise Refusal("concurrency", f"team {rules.team} already has {s.in_flight} queries running (limit {rules.concurrency})")
        if s.day_spent + estimate > rules.budget_per_day:
            raise Refusal("daily_budget", f"estimated cost {estimate:.4f} units would pass team {rules.team}'s daily budget ({s.day_spent:.4f} of {rules.budget_per_day:g} used)")
        if s.month_spent + estimate > rules.budget_per_month:
            raise Refusal("monthly_budget", f"estimated cost {estimate:.4f} units would pass team {rules.team}'s monthly budget ({s.month_spent:.4f} of {rules.budget_per_month:g} used)")
        entry = uuid.uuid4().hex
        state.in_flight[entry] = Reservation(entry, rules.team, key_name, now.date(), estimate, now)
    return entry


def _close(state: GovernanceState, entry: str, actual: float, status: str) -> None:
    with state.lock:
        r: Reservation | None = state.in_flight.get(entry)
        if r is None:
            return
        state.con.execute(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [r.entry_id, r.team, r.key_name, r.day, r.day.replace(day=1), r.estimate, actual, status, r.created_at, _now()],
        )
        del state.in_flight[entry]
        if status == "settled":
            _book(state).add(r.team, r.day, actual)


def settle(state: GovernanceState, entry: str, actual: float) -> None:
    """Charge the actual cost (on the reservation's day)."""
    _close(state, entry, actual, "settled")


def release(state: GovernanceState, entry: str) -> None:
    """A failed or interrupted query: nothing is charged."""
    _close(state, entry, 0.0, "released")


def discard(state: GovernanceState, entry: str | None) -> None:
    """Forget a reservation that was neither settled nor released (the request ended in an
    error): it must not hold the team's concurrency or budget."""
    if entry is not None:
        with state.lock:
            state.in_flight.pop(entry, None)


def release_stale(state: GovernanceState) -> int:
    """At start: 'reserved' rows left in the file by an older gateway that died mid-query are
    released (this one never writes them)."""
    with state.lock:
        n = len(state.con.execute("UPDATE ledger SET actual = 0, status = 'released', settled_at = ? WHERE status = 'reserved' RETURNING entry_id", [_now()]).fetchall())
        if n:
            state.cache.pop("ledger", None)
        return n


def team_usage(state: GovernanceState, rules: TeamRules, day: date | None = None) -> dict:
    """A team's spend today and this month against its budgets (GET /v1/usage, `civicflow budget`)."""
    day = day or _now().date()
    s = spend(state, rules.team, day)
    return {
        "team": rules.team, "day": day.isoformat(),
        "day_spent": s.day_spent, "day_budget": rules.budget_per_day, "day_left": max(0.0, rules.budget_per_day - s.day_spent),
        "month_spent": s.month_spent, "month_budget": rules.budget_per_month, "month_left": max(0.0, rules.budget_per_month - s.month_spent),
        "per_query_cap": rules.per_query_cap, "in_flight": s.in_flight, "unit": "1 cost unit = 1 MB scanned",
    }


def spend_by_key(state: GovernanceState, day: date | None = None) -> list[dict]:
    """Settled spend per team and key, today and this month, with the number of queries charged
    (`civicflow budget --by key`). Queries in flight are not in it until they settle."""
    day = day or _now().date()
    with state.lock:
        rows = state.con.execute(
            "SELECT team, coalesce(key_name, '') AS key_name, sum(actual) FILTER (WHERE day = ?) AS day_spent, sum(actual) AS month_spent, "
            "count(*) FILTER (WHERE day = ?) AS day_queries, count(*) AS month_queries FROM ledger "
            "WHERE status = 'settled' AND month = ? GROUP BY ALL ORDER BY team, month_spent DESC, key_name",
            [day, day, day.replace(day=1)]).fetchall()
    return [{"team": t, "key": k, "day_spent": d or 0.0, "month_spent": m or 0.0, "day_queries": dq, "month_queries": mq} for t, k, d, m, dq, mq in rows]


def spend_by_day(state: GovernanceState, days: int = 30, day: date | None = None) -> list[dict]:
    """Settled spend per day and team over the last `days` days, today included; a day with no
    spend is listed with 0 so gaps show."""
    day = day or _now().date()
    with state.lock:
        rows = state.con.execute(
            "WITH days AS (SELECT CAST(d AS DATE) AS day FROM range(CAST(? AS DATE) - ?::INTEGER + 1, CAST(? AS DATE) + 1, INTERVAL 1 DAY) t(d)), "
            "teams AS (SELECT DISTINCT team FROM ledger WHERE status = 'settled' AND day > CAST(? AS DATE) - ?::INTEGER) "
            "SELECT days.day, teams.team, coalesce(sum(l.actual), 0), count(l.entry_id) FROM days CROSS JOIN teams "
            "LEFT JOIN ledger l ON l.day = days.day AND l.team = teams.team AND l.status = 'settled' GROUP BY ALL ORDER BY 1, 2",
            [day, days, day, day, days]).fetchall()
    return [{"day": d.isoformat(), "team": t, "spent": float(s), "queries": n} for d, t, s, n in rows]
