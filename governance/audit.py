"""The audit trail: every request, accepted or refused, in a hash-chained table.

Each row's hash covers its fields and the previous row's hash, so changing, deleting or
re-ordering any row breaks the chain from there on; `verify` finds the first broken row.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from governance.state import GovernanceState

GENESIS = "0" * 64
FIELDS = ("seq", "audit_id", "ts", "key_name", "team", "sql", "tables", "columns", "rule", "outcome", "message",
          "estimate", "actual", "duration_ms", "result_rows", "snapshot")


@dataclass
class AuditEntry:
    outcome: str  # ok | estimate | usage | refused | failed | admin
    audit_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    key_name: str | None = None
    team: str | None = None
    sql: str | None = None
    tables: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rule: str | None = None
    message: str | None = None
    estimate: float | None = None
    actual: float | None = None
    duration_ms: float | None = None
    result_rows: int | None = None
    snapshot: str | None = None


def _digest(prev_hash: str, row: dict) -> str:
    payload = json.dumps({k: (str(v) if isinstance(v, datetime) else v) for k, v in row.items()}, sort_keys=True, default=str)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def _canonical(value):
    return None if value is None else (round(float(value), 9) if isinstance(value, float) else value)


def _head(state: GovernanceState) -> tuple[int, str]:
    """The last row's (seq, hash). Read from the file once, then kept by `append`: this
    process is the only writer, and reading it back would cost a scan per request."""
    head = state.cache.get("audit_head")
    if head is None:
        last = state.con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        head = state.cache["audit_head"] = (last[0], last[1]) if last else (0, GENESIS)
    return head


def append(state: GovernanceState, entry: AuditEntry) -> str:
    """Add a row to the chain. Inside `state.transaction()` it commits with the other writes
    of the request (e.g. the ledger's settlement); alone, it is its own transaction."""
    ts = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with state.lock:
        last_seq, prev = _head(state)
        seq = last_seq + 1
        data = asdict(entry)
        row = {
            "seq": seq, "ts": ts, **{k: data[k] for k in FIELDS if k in data},
            "tables": json.dumps(entry.tables), "columns": json.dumps(entry.columns),
        }
        row = {k: _canonical(row[k]) for k in FIELDS}
        digest = _digest(prev, row)
        try:
            state.con.execute(
                f"INSERT INTO audit ({', '.join(FIELDS)}, prev_hash, hash) VALUES ({', '.join('?' * (len(FIELDS) + 2))})",
                [row[k] for k in FIELDS] + [prev, digest],
            )
        except BaseException:
            state.cache.pop("audit_head", None)  # e.g. the file was written behind our back: re-read it
            raise
        state.cache["audit_head"] = (seq, digest)  # a rollback clears the cache: re-read then
    return entry.audit_id


def verify(state: GovernanceState) -> list[str]:
    """Problems found in the chain (empty when intact)."""
    problems: list[str] = []
    with state.lock:
        cur = state.con.execute(f"SELECT {', '.join(FIELDS)}, prev_hash, hash FROM audit ORDER BY seq")
        rows = cur.fetchall()
    prev, expected_seq = GENESIS, 1
    for r in rows:
        row = {k: _canonical(v) for k, v in zip(FIELDS, r[: len(FIELDS)])}
        prev_hash, digest = r[len(FIELDS)], r[len(FIELDS) + 1]
        if row["seq"] != expected_seq:
            problems.append(f"seq {row['seq']}: expected seq {expected_seq} (a row was deleted or inserted)")
        if prev_hash != prev:
            problems.append(f"seq {row['seq']}: prev_hash does not match the previous row's hash")
        if _digest(prev_hash, row) != digest:
            problems.append(f"seq {row['seq']}: hash does not match the row's contents (audit id {row['audit_id']})")
        prev, expected_seq = digest, row["seq"] + 1
    return problems


def entries(state: GovernanceState, limit: int = 100) -> list[dict]:
    with state.lock:
        cur = state.con.execute(f"SELECT {', '.join(FIELDS)} FROM audit ORDER BY seq DESC LIMIT ?", [limit])
        return [dict(zip(FIELDS, r)) for r in cur.fetchall()]
