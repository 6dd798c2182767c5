"""One analyst request, end to end: key → statement → plan → policy → estimate → reserve →
sandboxed run → settle + audit. The HTTP server, the CLI and the benchmark all call this.

The reservation is taken in memory (governance.ledger) and the request's writes to
governance.duckdb — the ledger row and the audit row — go in one transaction at the end: one
disk sync per request, which is most of what the gateway adds to a small query.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from governance import audit, ledger
from governance.answer_notes import cell_notes
from governance.audit import AuditEntry
from governance.catalog import Manifest, describe_grant, load_manifest
from governance.cost import estimate_bytes, to_units
from governance.hints import plan_hint
from governance.keys import authenticate
from governance.plan import parse_plan
from governance.policy import (
    GROUP_SIZE_COLUMN,
    Refusal,
    add_group_size,
    check_functions,
    check_plan,
    check_statement,
)
from governance.result import STATUS, Result  # noqa: F401 (callers import them from here)
from governance.rules import TeamRules
from governance.sandbox import QueryTimeout, Sandbox, SandboxLimits
from governance.settle import StreamEnding
from governance.state import GovernanceState
from governance.stream import ResultStream, Suppression
from governance.team_files import TeamFiles
from governance.watchdog import WATCHDOG
from warehouse.catalog_url import CatalogUrl
from warehouse.snapshots import published_at, snapshot_of_team_file

USAGE_NOTE = "GET /v1/usage"
CATALOG_NOTE = "GET /v1/catalog"

AUDIT_SQL_PREFIX = 4096  # characters of a refused request's body kept in its audit row


DEADLINE_GRACE_SECONDS = 0.5  # for the interrupted query to hand back its own answer


class _Ticket:
    """Who answers a request: its worker, or the request thread once the deadline has passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None

    def claim(self, who: str = "worker") -> bool:
        """True when `who` answers (it claimed first, now or before)."""
        with self._lock:
            self._owner = self._owner or who
            return self._owner == who


class Gateway:
    def __init__(
        self,
        state: GovernanceState,
        rules: dict[str, TeamRules],
        published_dir: Path,
        manifest: Path | Manifest,
        limits: SandboxLimits = SandboxLimits(),
        credentials: Sequence[CatalogUrl] = (),
    ):
        self.state, self.rules, self.published_dir, self.limits = state, rules, Path(published_dir), limits
        self.credentials = tuple(credentials)  # a lake reader's catalog logins (WarehouseSettings.reader_credentials)
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.files = TeamFiles(self.published_dir, limits, self.credentials, {t: r.concurrency for t, r in rules.items()})
        # One thread per connection a team may hold: a request never waits for a worker.
        self._workers = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, sum(r.concurrency for r in rules.values())), thread_name_prefix="gateway-query")
        ledger.release_stale(state)

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        self.files.close()

    # -- the request
    def query(self, key: str | None, sql: str, dry_run: bool = False) -> Result:
        """The answer whole (`table`, at most the team's max_result_bytes), settled and audited."""
        result = self.stream(key, sql, dry_run)
        if result.stream is not None:
            table = result.stream.read_all()
            result.table, result.stream = (table if result.outcome == "ok" else None), None
        return result

    def stream(self, key: str | None, sql: str, dry_run: bool = False) -> Result:
        """Like `query`, but an accepted query's rows come as `result.stream`, read batch by batch
        as DuckDB produces them; the team's slot and timeout are held, and the cost settled and
        audited, when the stream ends (read to the end, cut, or closed)."""
        try:
            return self._query(key, sql, dry_run)
        except Exception as e:  # a bug must not leak text either: own message, audited
            entry = AuditEntry(outcome="failed", sql=sql)
            result = Result(audit_id=entry.audit_id, outcome="failed")
            return self._finish(entry, result, time.perf_counter(), rule="internal_error", message=f"the gateway failed ({type(e).__name__}); nothing was charged")

    def usage(self, key: str | None) -> Result:
        """GET /v1/usage: the key's team's spend and what is left; audited like a query."""
        try:
            t0 = time.perf_counter()
            entry = AuditEntry(outcome="refused")
            result = Result(audit_id=entry.audit_id, outcome="refused")
            found = self._authenticate(key, entry, result, t0, note=USAGE_NOTE)
            if isinstance(found, Result):
                return found
            entry.outcome = result.outcome = "usage"
            result.usage = ledger.team_usage(self.state, found)
            return self._finish(entry, result, t0, message="your team's spend and budget left", note=USAGE_NOTE)
        except Exception as e:
            entry = AuditEntry(outcome="failed")
            result = Result(audit_id=entry.audit_id, outcome="failed")
            return self._finish(entry, result, time.perf_counter(), rule="internal_error", message=f"the gateway failed ({type(e).__name__})", note=USAGE_NOTE)

    def reject(self, key: str | None, rule: str, message: str, body: str | None = None, note: str | None = None) -> Result:
        """A request refused before it is a query (too large, malformed, wrong method or path):
        audited like any other, with at most AUDIT_SQL_PREFIX characters of what was sent."""
        entry = AuditEntry(outcome="refused", sql=None if body is None else body[:AUDIT_SQL_PREFIX])
        result = Result(audit_id=entry.audit_id, outcome="refused")
        info = authenticate(self.state, key)
        if info is not None:
            entry.key_name, entry.team = info.name, info.team
        return self._finish(entry, result, time.perf_counter(), rule=rule, message=message, note=note)

    def granted_columns(self, key: str | None) -> dict[str, list[tuple[str, str]]]:
        """`schema.relation` → [(column, DuckDB type)] the key's team may name, identity columns
        left out unless it is cleared: what catalog probes (pg_catalog, information_schema) see."""
        info = authenticate(self.state, key)
        rules = self.rules.get(info.team) if info is not None and info.revoked_at is None else None
        sb = self.files.acquire(rules.team) if rules is not None else None
        if sb is None:
            return {}
        try:
            with sb.connection() as cur:
                return self._granted(rules, cur, sb)
        finally:
            self.files.release(sb)

    def _granted(self, rules: TeamRules, cur: duckdb.DuckDBPyConnection, sb: Sandbox) -> dict[str, list[tuple[str, str]]]:
        rows = cur.execute(
            "SELECT table_schema || '.' || table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY table_schema, table_name, ordinal_position").fetchall()
        out: dict[str, list[tuple[str, str]]] = {}
        for rel, col, typ in rows:
            if not rules.allows_relation(rel):
                continue
            if self.files.publication(sb).manifest.privacy.get(rel, {}).get(col, "identity") == "identity" and not rules.identity_clearance:
                continue
            out.setdefault(rel, []).append((col, typ))
        return out

    def catalog(self, key: str | None) -> Result:
        """GET /v1/catalog: what the key's team may query in the current snapshot (the same grant
        the Postgres endpoint's information_schema shows); audited like a query."""
        t0 = time.perf_counter()
        entry = AuditEntry(outcome="refused")
        result = Result(audit_id=entry.audit_id, outcome="refused")
        try:
            found = self._authenticate(key, entry, result, t0, note=CATALOG_NOTE)
            if isinstance(found, Result):
                return found
            sb = self.files.acquire(found.team)
            if sb is None:
                return self._finish(entry, result, t0, rule="no_snapshot", message=f"no warehouse snapshot is published for team {found.team} yet", note=CATALOG_NOTE)
            try:
                snapshot = snapshot_of_team_file(sb.snapshot)
                entry.snapshot = result.snapshot = snapshot.name
                result.as_of, result.data_date = published_at(snapshot), self.files.publication(sb).data_date
                with sb.connection() as cur:
                    # The team file's privacy classes (what it holds), dbt's descriptions.
                    described = dataclasses.replace(self.manifest, privacy=self.files.publication(sb).manifest.privacy)
                    result.catalog = describe_grant(self._granted(found, cur, sb), sb.catalog, described)
            finally:
                self.files.release(sb)
            entry.outcome = result.outcome = "catalog"
            return self._finish(entry, result, t0, message=f"{len(result.catalog)} relations granted to team {found.team}", note=CATALOG_NOTE)
        except Exception as e:
            entry.outcome = result.outcome = "failed"
            return self._finish(entry, result, time.perf_counter(), rule="internal_error", message=f"the gateway failed ({type(e).__name__})", note=CATALOG_NOTE)

    def _authenticate(self, key: str | None, entry: AuditEntry, result: Result, t0: float, note: str | None = None) -> TeamRules | Result:
        """The key's team rules, or the audited refusal."""
        info = authenticate(self.state, key)
        if info is None or info.revoked_at is not None:
            rule = "unauthenticated" if info is None else "revoked_key"
            msg = "missing or unknown API key" if info is None else f"key {info.name} was revoked"
            if info is not None:
                entry.key_name, entry.team = info.name, info.team
            return self._finish(entry, result, t0, rule=rule, message=msg, note=note)
        entry.key_name, entry.team = info.name, info.team
        rules = self.rules.get(info.team)
        if rules is None:
            return self._finish(entry, result, t0, rule="unknown_team", message=f"team {info.team} has no rules file; ask the data team", note=note)
        return rules

    def _query(self, key: str | None, sql: str, dry_run: bool = False) -> Result:
        """Authenticate, then take one of the team's own connections (refused when it holds them
        all) and do everything DuckDB does for the request — plan, policy, estimate, run — on a
        worker thread under one deadline, the team's timeout. DuckDB folds constants while
        planning and only sees an interrupt once that is over, so the request is answered at
        the deadline anyway; the connection (and so the team's slot) comes back when DuckDB
        has really stopped."""
        t0 = time.perf_counter()
        entry = AuditEntry(outcome="refused", sql=sql)
        result = Result(audit_id=entry.audit_id, outcome="refused")
        rules = self._authenticate(key, entry, result, t0)
        if isinstance(rules, Result):
            return rules
        sb = self.files.acquire(rules.team)
        if sb is None:
            return self._finish(entry, result, t0, rule="no_snapshot", message=f"no warehouse snapshot is published for team {rules.team} yet")
        snapshot = snapshot_of_team_file(sb.snapshot)
        entry.snapshot = result.snapshot = snapshot.name
        result.as_of, result.data_date = published_at(snapshot), self.files.publication(sb).data_date
        cur = sb.take(rules.team)
        if cur is None:
            self.files.release(sb)
            return self._finish(entry, result, t0, rule="concurrency",
                                message=f"team {rules.team} already has {rules.concurrency} requests planning or running (its limit); retry when one ends")
        ticket = _Ticket()
        stopped = threading.Event()
        deadline = time.monotonic() + rules.timeout_seconds

        def stop() -> None:
            stopped.set()
            cur.interrupt()

        token = [0]
        released = threading.Lock()

        def release() -> None:  # the team's slot and timeout: once, when DuckDB's work (or its stream) is over
            if released.acquire(blocking=False):
                WATCHDOG.disarm(token[0])
                sb.give(rules.team, cur)
                self.files.release(sb)

        def work() -> Result | None:
            token[0] = WATCHDOG.arm(rules.timeout_seconds, stop)
            out = None
            try:
                out = self._plan_and_run(sb, cur, rules, entry, result, t0, sql, dry_run, stopped, ticket, deadline, release)
                return out
            finally:
                if out is None or out.stream is None:  # a stream releases when it ends
                    release()

        future = self._workers.submit(work)
        try:
            return future.result(timeout=rules.timeout_seconds + DEADLINE_GRACE_SECONDS)
        except concurrent.futures.TimeoutError:
            pass
        if not ticket.claim("deadline"):  # the worker answered in the meantime
            return future.result()
        entry.outcome = result.outcome = "failed"
        return self._finish(entry, result, t0, rule="timeout",
                            message=f"stopped after team {rules.team}'s timeout of {rules.timeout_seconds:g} s (planning included); nothing was charged")

    def _plan_and_run(self, sb: Sandbox, cur: duckdb.DuckDBPyConnection, rules: TeamRules, entry: AuditEntry, result: Result, t0: float,
                      sql: str, dry_run: bool, stopped: threading.Event, ticket: "_Ticket", deadline: float,
                      release: Callable[[], None]) -> Result | None:
        """The request's DuckDB work, up to the start of its result stream. Returns None when the
        request was already answered (its deadline passed): then nothing is audited or charged here."""
        timings: dict[str, float] = {}
        reservation = None
        streaming = False

        def finish(**kw) -> Result | None:
            if not ticket.claim():
                return None
            return self._finish(entry, result, t0, timings=timings, **kw)

        try:
            try:
                t = time.perf_counter()
                statement = check_statement(cur, sql)
                check_functions(cur, statement)
                perms = self.files.permissions(sb, rules, cur)
                columns_of = lambda tb: set(sb.catalog.relations[tb].columns) if tb in sb.catalog.relations else set()  # noqa: E731
                wrapped = _limit(statement, rules.max_result_rows)
                plan = parse_plan(_explain(sb, cur, wrapped), columns_of, sb.catalog.relations.keys())
                decision = check_plan(plan, rules, perms)
                if decision.needs_group_suppression:
                    try:
                        sized = add_group_size(cur, statement, decision.group_weight)
                        wrapped = _limit(sized.sql, rules.max_result_rows)
                        plan = parse_plan(_explain(sb, cur, wrapped), columns_of, sb.catalog.relations.keys())
                    except Refusal:
                        raise
                    except Exception:
                        raise Refusal("quasi_aggregate_required", "a query that reads quasi-identifiers must aggregate at its top level (GROUP BY / count / sum)") from None
                    decision = check_plan(plan, rules, perms)
                entry.tables, entry.columns = decision.tables, decision.columns
                result.tables, result.columns = decision.tables, decision.columns
                result.notes = cell_notes(decision.tables, self.files.publication(sb), rules)
                # A table function whose arguments are computed by a subquery has no row count
                # in the plan: it may cost up to the team's per-query cap, and is reserved so.
                estimate = rules.per_query_cap if plan.unbounded_functions else to_units(estimate_bytes(plan, sb.catalog))
                entry.estimate = result.estimate = estimate
                timings["plan_policy"] = (time.perf_counter() - t) * 1000
                if dry_run:
                    if estimate > rules.per_query_cap:
                        raise Refusal("per_query_cap", f"estimated cost {estimate:.4f} units is above the per-query cap of {rules.per_query_cap:g} units for team {rules.team}")
                    entry.outcome = result.outcome = "estimate"
                    return finish()
                t = time.perf_counter()
                if stopped.is_set():
                    return finish(rule="timeout", message=f"stopped after team {rules.team}'s timeout of {rules.timeout_seconds:g} s (planning included); nothing was charged")
                reservation = entry.ledger_entry = ledger.reserve(self.state, rules, entry.key_name, estimate)
                timings["reserve"] = (time.perf_counter() - t) * 1000
            except Refusal as r:
                if r.rule == "plan_failed":  # say why: what is not published to the team, or the closest granted names
                    why = self.files.publication(sb).why_not(sql, rules)
                    if why is not None:
                        r = why
                    elif isinstance(r.__context__, duckdb.Error):
                        r.message = plan_hint(sql, r.__context__, self._granted(rules, cur, sb))
                entry.tables, entry.columns = entry.tables or r.tables, entry.columns or r.columns
                result.tables, result.columns = entry.tables, entry.columns
                if stopped.is_set():  # e.g. the interrupt reached an EXPLAIN: it was the deadline
                    entry.outcome = result.outcome = "failed"
                    return finish(rule="timeout", message=f"stopped after team {rules.team}'s timeout of {rules.timeout_seconds:g} s (planning included); nothing was charged")
                return finish(rule=r.rule, message=r.message)
            t = time.perf_counter()
            try:
                reader = sb.start(cur, wrapped, stopped)
            except QueryTimeout:
                entry.outcome = result.outcome = "failed"
                return finish(rule="timeout", message=f"stopped after team {rules.team}'s timeout of {rules.timeout_seconds:g} s; nothing was charged",
                              ledger_write=lambda: ledger.release(self.state, reservation))
            except duckdb.Error as e:
                entry.outcome = result.outcome = "failed"
                # DuckDB's own text may quote warehouse values: name its class only.
                return finish(rule="query_failed", message=f"DuckDB could not run the query ({type(e).__name__}); nothing was charged",
                              ledger_write=lambda: ledger.release(self.state, reservation))
            timings["start"] = (time.perf_counter() - t) * 1000
            if not ticket.claim():  # answered at the deadline meanwhile
                reader.close()
                return None
            ending = StreamEnding(self.state, self._finish, sb, cur, rules, entry, result, t0, timings, wrapped, estimate, plan.unbounded_functions, reservation, release)
            suppression = Suppression(GROUP_SIZE_COLUMN, rules.min_group_size, sized.offset, sized.limit) if decision.needs_group_suppression else None
            result.stream = ResultStream(reader, max_rows=rules.max_result_rows, max_bytes=rules.max_result_bytes, suppression=suppression,
                                         stopped=stopped, deadline=deadline, on_end=ending)
            entry.outcome = result.outcome = "ok"
            streaming = True
            return result
        except Exception as e:  # a bug must not leak text either: own message, audited
            if not ticket.claim():
                return None
            failed = AuditEntry(outcome="failed", sql=sql, key_name=entry.key_name, team=entry.team)
            return self._finish(failed, Result(audit_id=failed.audit_id, outcome="failed"), t0, rule="internal_error",
                                message=f"the gateway failed ({type(e).__name__}); nothing was charged")
        finally:
            if not streaming:  # a stream settles when it ends
                ledger.discard(self.state, reservation)  # only if neither settled nor released (an error or a late answer)

    def _finish(self, entry: AuditEntry, result: Result, t0: float, rule: str | None = None, message: str | None = None,
                timings: dict | None = None, ledger_write: Callable[[], None] | None = None, note: str | None = None) -> Result:
        """Audit the request (with its ledger row, if any). `note` prefixes the audit's message
        to say which request it was when it carries no SQL (e.g. GET /v1/usage)."""
        entry.rule = result.rule = rule if rule is not None else result.rule
        result.message = message if message is not None else result.message
        entry.message = f"{note}: {result.message}" if note else result.message
        entry.duration_ms = (time.perf_counter() - t0) * 1000
        t = time.perf_counter()
        with self.state.transaction():  # the ledger row and the audit row: one commit
            if ledger_write is not None:
                ledger_write()  # the reservation's ledger row: the audit row names it (audit.verify)
            audit.append(self.state, entry)
        result.timings_ms = dict(timings or {}, settle_audit=(time.perf_counter() - t) * 1000)
        return result


def _limit(statement: str, max_rows: int) -> str:
    # One row more than allowed tells us the result was truncated.
    return f"SELECT * FROM (\n{statement}\n) AS cf_result LIMIT {max_rows + 1}"


def _explain(sb: Sandbox, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
    try:
        statements = cur.extract_statements(sql)
    except duckdb.Error:  # e.g. PRAGMA parses as a SELECT alone but not inside a subquery
        raise Refusal("single_select", "only a plain SELECT query is allowed (not PRAGMA, SUMMARIZE-like shortcuts that do not compose)") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise Refusal("single_select", "exactly one SELECT statement per request")
    try:
        return sb.explain(cur, sql)
    except duckdb.PermissionException:
        raise Refusal("external_access", "the query asks for files, network or settings, which the sandbox does not allow") from None
    except duckdb.Error as e:
        raise Refusal("plan_failed", f"DuckDB could not plan the query ({type(e).__name__}); check table and column names") from None
