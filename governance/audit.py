"""The audit trail: every request, accepted or refused, in a keyed hash chain anchored outside
the database.

Each row's hash is an HMAC-SHA256, over its fields and the previous row's hash, with a key kept
in `audit.key` beside governance.duckdb (mode 0600, never in the database): whoever can write
the database but not read the key cannot rewrite a row and recompute the hashes after it.
Each committed row's head (seq, hash) is appended to `audit.anchor` (append-only, in the home),
and each day's usage export carries the head of that moment: deleting the last rows, or every
row, or rewriting the chain even with the key, leaves an anchor the table no longer matches.

`verify` also checks the rows the chain vouches for: every ledger row (what a team was
charged) has its audit row and agrees with it, so deleting a ledger row (a spend reset) shows;
every API key has the audit row of its creation, whose fingerprint covers the key's team and
hashes, so a key inserted or changed in the database directly shows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from governance.state import GovernanceState

GENESIS = "0" * 64
FIELDS = ("seq", "audit_id", "ts", "key_name", "team", "sql", "tables", "columns", "rule", "outcome", "message",
          "estimate", "actual", "duration_ms", "result_rows", "snapshot", "ledger_entry")
KEY_FILE = "audit.key"
ANCHOR_FILE = "audit.anchor"


class AuditKeyError(RuntimeError):
    pass


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
    ledger_entry: str | None = None  # the ledger row this request wrote (its entry_id), if any


def key_path(state: GovernanceState) -> Path:
    return state.path.parent / KEY_FILE


def anchor_path(state: GovernanceState) -> Path:
    return state.path.parent / ANCHOR_FILE


def _secret(state: GovernanceState) -> bytes:
    """The chain's HMAC key, created (0600) with the first row; callers hold state.lock."""
    key = state.cache.get("audit_key")
    if key is not None:
        return key
    path = key_path(state)
    if not path.exists():
        if state.con.execute("SELECT count(*) FROM audit").fetchone()[0]:
            raise AuditKeyError(f"{path} is missing but the audit table has rows: restore the key file (the chain cannot be extended without it)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    key = state.cache["audit_key"] = bytes.fromhex(path.read_text().strip())
    return key


def _digest(key: bytes, prev_hash: str, row: dict) -> str:
    payload = json.dumps({k: (str(v) if isinstance(v, datetime) else v) for k, v in row.items()}, sort_keys=True, default=str)
    return hmac.new(key, (prev_hash + payload).encode(), hashlib.sha256).hexdigest()


def _anchor(path: Path, seq: int, digest: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps({"seq": seq, "hash": digest}) + "\n")


def read_anchors(path: Path) -> list[tuple[int, str]]:
    """(seq, hash) pairs of an anchor file (one JSON object a line) or a usage export's head file."""
    if not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            out.append((int(item["seq"]), str(item["hash"])))
    return out


def head(state: GovernanceState) -> dict:
    """The chain's head now: what a usage export records as its anchor."""
    with state.lock:
        seq, digest = _head(state)
    return {"seq": seq, "hash": digest, "at": datetime.now(UTC).isoformat(timespec="seconds")}


def key_fingerprint(key_id: str, team: str, key_hash: str, salt: bytes, stored_key: bytes, server_key: bytes) -> str:
    """What a key's creation row vouches for: its team and both of its verifiers."""
    h = hashlib.sha256()
    for part in (key_id, team, key_hash):
        h.update(part.encode() + b"\0")
    for part in (salt, stored_key, server_key):
        h.update(bytes(part) + b"\0")
    return h.hexdigest()


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
        digest = _digest(_secret(state), prev, row)
        try:
            state.con.execute(
                f"INSERT INTO audit ({', '.join(FIELDS)}, prev_hash, hash) VALUES ({', '.join('?' * (len(FIELDS) + 2))})",
                [row[k] for k in FIELDS] + [prev, digest],
            )
        except BaseException:
            state.cache.pop("audit_head", None)  # e.g. the file was written behind our back: re-read it
            raise
        state.cache["audit_head"] = (seq, digest)  # a rollback clears the cache: re-read then
        anchor = anchor_path(state)
        state.on_commit(lambda: _anchor(anchor, seq, digest))  # only heads that exist in the file
    return entry.audit_id


def verify(state: GovernanceState, anchors: Iterable[tuple[int, str]] = ()) -> list[str]:
    """Problems found (empty when intact): the chain, its anchors (audit.anchor plus `anchors`,
    e.g. the heads recorded in usage exports), the key file, the ledger and the keys."""
    problems: list[str] = []
    with state.lock:
        rows = state.con.execute(f"SELECT {', '.join(FIELDS)}, prev_hash, hash FROM audit ORDER BY seq").fetchall()
        ledger_rows = state.con.execute("SELECT entry_id, team, status, actual FROM ledger").fetchall()
        key_rows = state.con.execute(
            "SELECT k.key_id, k.team, k.key_hash, s.salt, s.stored_key, s.server_key, k.revoked_at FROM keys k LEFT JOIN key_scram s USING (key_id)").fetchall()
        path = key_path(state)
        if not path.exists():
            return [f"{path} is missing: the chain cannot be verified"] if rows else []
        mode = path.stat().st_mode & 0o777
        if mode != 0o600:
            problems.append(f"{path} has mode {mode:04o}; it must be 0600 (only the gateway's user may read the key)")
        key = _secret(state)
    prev, expected_seq = GENESIS, 1
    by_seq: dict[int, str] = {}
    chained: list[dict] = []  # rows whose hash verified: the only ones that vouch for anything
    for r in rows:
        row = {k: _canonical(v) for k, v in zip(FIELDS, r[: len(FIELDS)])}
        prev_hash, digest = r[len(FIELDS)], r[len(FIELDS) + 1]
        by_seq[row["seq"]] = digest
        if row["seq"] != expected_seq:
            problems.append(f"seq {row['seq']}: expected seq {expected_seq} (a row was deleted or inserted)")
        if prev_hash != prev:
            problems.append(f"seq {row['seq']}: prev_hash does not match the previous row's hash")
        if _digest(key, prev_hash, row) != digest:
            problems.append(f"seq {row['seq']}: hash does not match the row's contents (audit id {row['audit_id']})")
        else:
            chained.append(row)
        prev, expected_seq = digest, row["seq"] + 1
    problems += _check_anchors(state, by_seq, anchors)
    problems += _check_ledger(chained, ledger_rows)
    problems += _check_keys(chained, key_rows)
    return problems


def _check_anchors(state: GovernanceState, by_seq: dict[int, str], extra: Iterable[tuple[int, str]]) -> list[str]:
    anchored = read_anchors(anchor_path(state))
    if by_seq and not anchored:
        return [f"{anchor_path(state)} is missing or empty while the table has {len(by_seq)} rows"]
    problems: list[str] = []
    every = [*anchored, *extra]
    last = max(by_seq, default=0)
    top = max((seq for seq, _ in every), default=0)
    if top > last:
        problems.append(f"the anchors record seq {top} but the table ends at seq {last}: {top - last} last row(s) were deleted")
    for seq, digest in every:
        if seq == 0:
            continue
        found = by_seq.get(seq)
        if found is None:
            if seq <= last:
                problems.append(f"anchored seq {seq} is not in the table (a row was deleted)")
        elif found != digest:
            problems.append(f"seq {seq}: hash differs from the anchored one (the chain was rewritten)")
    return problems


def _check_ledger(chained: list[dict], ledger_rows: list[tuple]) -> list[str]:
    """Each ledger row against the audit row that wrote it (same transaction)."""
    audited = {r["ledger_entry"]: r for r in chained if r["ledger_entry"]}
    problems: list[str] = []
    present = set()
    for entry_id, team, status, actual in ledger_rows:
        present.add(entry_id)
        row = audited.get(entry_id)
        if row is None:
            problems.append(f"ledger row {entry_id} (team {team}) has no audit row (inserted behind the gateway's back)")
            continue
        charged = float(actual or 0.0) if status == "settled" else 0.0
        billed = float(row["actual"] or 0.0) if row["outcome"] == "ok" else 0.0
        if team != row["team"] or abs(charged - billed) > 1e-9:
            problems.append(f"ledger row {entry_id}: team {team} charged {charged:g} but audit id {row['audit_id']} says team {row['team']} {billed:g}")
    for entry_id, row in audited.items():
        if entry_id not in present:
            problems.append(f"ledger row {entry_id} of audit id {row['audit_id']} (team {row['team']}) is missing: the spend was reset")
    return problems


def _check_keys(chained: list[dict], key_rows: list[tuple]) -> list[str]:
    created = {r["message"] for r in chained if r["outcome"] == "admin" and r["message"]}
    problems: list[str] = []
    for key_id, team, key_hash, salt, stored, server, revoked_at in key_rows:
        fp = key_fingerprint(key_id, team, key_hash, salt or b"", stored or b"", server or b"") if salt is not None else None
        if fp is None or creation_message(key_id, team, fp) not in created:
            problems.append(f"key {key_id} (team {team}) has no matching creation row in the audit (inserted or changed directly)")
        elif revoked_at is None and revocation_message(key_id) in created:
            problems.append(f"key {key_id} (team {team}) was revoked (audit) but is active again in the keys table")
    return problems


def revocation_message(key_id: str) -> str:
    return f"key {key_id} revoked"


def creation_message(key_id: str, team: str, fingerprint: str) -> str:
    return f"key {key_id} created for team {team} (fingerprint {fingerprint})"


def entries(state: GovernanceState, limit: int = 100) -> list[dict]:
    with state.lock:
        cur = state.con.execute(f"SELECT {', '.join(FIELDS)} FROM audit ORDER BY seq DESC LIMIT ?", [limit])
        return [dict(zip(FIELDS, r)) for r in cur.fetchall()]
