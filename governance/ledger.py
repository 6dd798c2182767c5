"""The budget ledger: reserve the estimate before running, settle the actual after.

Check-and-reserve happens under the state lock in one transaction, so parallel queries of a
team cannot together pass its budget: each sees the others' reservations. In-flight
reservations also count against the team's concurrency limit. A failed query's reservation
is released (it costs nothing).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone

from governance.policy import Refusal
from governance.rules import TeamRules
from governance.state import GovernanceState


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Spend:
    team: str
    day_spent: float
    month_spent: float
    in_flight: int


def spend(state: GovernanceState, team: str, day: date | None = None) -> Spend:
    """Settled actuals plus open reservations, for the day and its month."""
    day = day or _now().date()
    with state.lock:
        row = state.con.execute(
            """
            SELECT coalesce(sum(CASE WHEN day = ? THEN coalesce(actual, estimate) END), 0),
                   coalesce(sum(coalesce(actual, estimate)), 0),
                   count(*) FILTER (WHERE status = 'reserved')
            FROM ledger WHERE team = ? AND month = ? AND status IN ('reserved', 'settled')
            """,
            [day, team, day.replace(day=1)],
        ).fetchone()
    return Spend(team, float(row[0]), float(row[1]), int(row[2]))


def reserve(state: GovernanceState, rules: TeamRules, key_name: str, estimate: float, now: datetime | None = None) -> str:
    now = now or _now()
    if estimate > rules.per_query_cap:
        raise Refusal("per_query_cap", f"estimated cost {estimate:.4f} units is above the per-query cap of {rules.per_query_cap:g} units for team {rules.team}")
    with state.lock:
        state.con.execute("BEGIN TRANSACTION")
        try:
            s = spend(state, rules.team, now.date())
            if s.in_flight >= rules.concurrency:
                raise Refusal("concurrency", f"team {rules.team} already has {s.in_flight} queries running (limit {rules.concurrency})")
            if s.day_spent + estimate > rules.budget_per_day:
                raise Refusal("daily_budget", f"estimated cost {estimate:.4f} units would pass team {rules.team}'s daily budget ({s.day_spent:.4f} of {rules.budget_per_day:g} used)")
            if s.month_spent + estimate > rules.budget_per_month:
                raise Refusal("monthly_budget", f"estimated cost {estimate:.4f} units would pass team {rules.team}'s monthly budget ({s.month_spent:.4f} of {rules.budget_per_month:g} used)")
            entry = uuid.uuid4().hex
            state.con.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, NULL, 'reserved', ?, NULL)",
                [entry, rules.team, key_name, now.date(), now.date().replace(day=1), estimate, now],
            )
            state.con.execute("COMMIT")
        except BaseException:
            state.con.execute("ROLLBACK")
            raise
    return entry


def settle(state: GovernanceState, entry: str, actual: float) -> None:
    with state.lock:
        state.con.execute("UPDATE ledger SET actual = ?, status = 'settled', settled_at = ? WHERE entry_id = ?", [actual, _now(), entry])


def release(state: GovernanceState, entry: str) -> None:
    """A failed or interrupted query: nothing is charged."""
    with state.lock:
        state.con.execute("UPDATE ledger SET actual = 0, status = 'released', settled_at = ? WHERE entry_id = ?", [_now(), entry])


def release_stale(state: GovernanceState) -> int:
    """At start: reservations left by a process that died mid-query are released."""
    with state.lock:
        return len(state.con.execute("UPDATE ledger SET actual = 0, status = 'released', settled_at = ? WHERE status = 'reserved' RETURNING entry_id", [_now()]).fetchall())
