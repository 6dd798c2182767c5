"""What the gateway does when an accepted query's result stream ends: settle its cost, write its
audit row (one transaction, as for every request), and give the team's connection back.

A stream DuckDB ran to its end is charged from its profile. One that stopped early — cut at
`max_result_bytes`, left by its client, or stopped by the team's timeout once rows had gone
out — has no profile and is charged its estimate, the upper bound it was reserved at. A stream
that fails before any row went out is charged nothing, as a refused query is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import duckdb

from governance import ledger
from governance.audit import AuditEntry
from governance.cost import actual_bytes, to_units
from governance.result import Result
from governance.rules import TeamRules
from governance.sandbox import Sandbox
from governance.state import GovernanceState
from governance.stream import BYTES_CAP, CLIENT_GONE, FAILED, ROWS_CAP, TIMEOUT, StreamEnd

Finish = Callable[..., Result]  # Gateway._finish: audit the request, with its ledger write, in one transaction


class StreamEnding:
    """The stream's `on_end`: called once, from whichever thread ended it."""

    def __init__(self, state: GovernanceState, finish: Finish, sb: Sandbox, cur: duckdb.DuckDBPyConnection, rules: TeamRules, entry: AuditEntry, result: Result,
                 t0: float, timings: dict[str, float], sql: str, estimate: float, unbounded: bool, reservation: str | None,
                 release: Callable[[], None]):
        self.state, self.finish, self.sb, self.cur, self.rules, self.entry, self.result = state, finish, sb, cur, rules, entry, result
        self.t0, self.timings, self.sql, self.estimate, self.unbounded = t0, timings, sql, estimate, unbounded
        self.reservation, self.release = reservation, release
        self.streamed_from = time.perf_counter()

    def __call__(self, end: StreamEnd) -> None:
        entry, result, state, team = self.entry, self.result, self.state, self.rules.team
        try:
            self.timings["stream"] = (time.perf_counter() - self.streamed_from) * 1000
            entry.result_rows = end.rows
            result.suppressed_groups = end.suppressed_groups
            result.truncated = end.reason in (ROWS_CAP, BYTES_CAP)
            if end.reason in (TIMEOUT, FAILED) and end.rows == 0:
                entry.outcome = result.outcome = "failed"
                message = (f"stopped after team {team}'s timeout of {self.rules.timeout_seconds:g} s; nothing was charged" if end.reason == TIMEOUT
                           else "DuckDB could not run the query (while reading its result); nothing was charged")
                self.finish(entry, result, self.t0, timings=self.timings, rule=end.reason, message=message,
                           ledger_write=lambda: ledger.release(state, self.reservation))
                return
            actual = to_units(actual_bytes(self.sb.profile(self.cur, self.sql), self.sb.catalog)) if end.duckdb_done else self.estimate
            actual = min(actual, self.estimate) if self.unbounded else actual
            entry.actual = result.actual = actual
            rule, message = None, None
            if end.reason == BYTES_CAP:
                rule, message = BYTES_CAP, (f"the result was cut at team {team}'s max_result_bytes of {self.rules.max_result_bytes} bytes "
                                            f"after {end.rows} rows; charged its estimate")
            elif end.reason == CLIENT_GONE:
                rule, message = CLIENT_GONE, f"the client stopped reading after {end.rows} rows; charged its estimate"
            elif end.reason in (TIMEOUT, FAILED):
                entry.outcome = result.outcome = "failed"
                rule, message = end.reason, (f"stopped after team {team}'s timeout of {self.rules.timeout_seconds:g} s, after {end.rows} rows "
                                             "had been sent; charged its estimate" if end.reason == TIMEOUT
                                             else f"DuckDB failed after {end.rows} rows had been sent; charged its estimate")
            self.finish(entry, result, self.t0, timings=self.timings, rule=rule, message=message,
                       ledger_write=lambda: ledger.settle(state, self.reservation, actual))
        except Exception as e:  # e.g. the audit write failed: its transaction (and the charge) rolled back; said, audited anew
            failed = AuditEntry(outcome="failed", sql=entry.sql, key_name=entry.key_name, team=entry.team)
            result.audit_id, result.outcome, result.actual = failed.audit_id, "failed", None
            self.finish(failed, result, self.t0, rule="internal_error", message=f"the gateway failed ({type(e).__name__}); nothing was charged")
        finally:
            ledger.discard(state, self.reservation)  # only if neither settled nor released (an error above)
            self.release()
