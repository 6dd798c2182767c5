"""API keys: shown once at creation, stored only as a SHA-256 hash, revocable.

Keys are 32 random bytes, so a plain SHA-256 is enough (no password stretching needed).
The serving process reads them on every request, so it keeps them in memory (hash → record),
loaded once and kept in step by `create_key` and `revoke_key`, which every writer of the file
goes through (the admin commands reach the running server over HTTP, see governance.admin).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from scramp import ScramMechanism

from governance import audit
from governance.state import GovernanceState

PREFIX = "cfk_"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default; the key itself is 32 random bytes


class KeyHash(str):
    """A key already proven without being sent (SCRAM over the Postgres endpoint), named by
    its hash: the gateway accepts it where it accepts a key."""


@dataclass(frozen=True)
class ScramVerifier:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    team: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _by_hash(state: GovernanceState) -> dict[str, KeyInfo]:
    """Callers hold state.lock."""
    index = state.cache.get("keys")
    if index is None:
        rows = state.con.execute("SELECT key_hash, key_id, team, name, created_at, revoked_at FROM keys").fetchall()
        index = state.cache["keys"] = {r[0]: KeyInfo(*r[1:]) for r in rows}
    return index


def create_key(state: GovernanceState, team: str, name: str) -> tuple[str, KeyInfo]:
    """Returns (the key — show it once, it is not stored —, its record). The key's row and the
    audit row of its creation (with the key's fingerprint, audit.key_fingerprint) commit together:
    `verify-audit` finds any key that has no such row."""
    key_id = secrets.token_hex(4)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    info = KeyInfo(key_id, team, name, _now(), None)
    with state.transaction():
        if state.con.execute("SELECT 1 FROM keys WHERE name = ? AND revoked_at IS NULL", [name]).fetchone():
            raise ValueError(f"an active key named {name!r} already exists; revoke it first or pick another name")
        index = _by_hash(state)
        state.con.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)", [key_id, hash_key(key), team, name, info.created_at])
        # SCRAM's verifier, so a Postgres client can prove the key without sending it.
        salt, stored, server, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(key, iteration_count=SCRAM_ITERATIONS)
        state.con.execute("INSERT INTO key_scram VALUES (?, ?, ?, ?, ?)", [key_id, salt, stored, server, iterations])
        fingerprint = audit.key_fingerprint(key_id, team, hash_key(key), salt, stored, server)
        audit.append(state, audit.AuditEntry(outcome="admin", key_name=name, team=team, message=audit.creation_message(key_id, team, fingerprint)))
        index[hash_key(key)] = info
    return key, info


def list_keys(state: GovernanceState) -> list[KeyInfo]:
    with state.lock:
        rows = state.con.execute("SELECT key_id, team, name, created_at, revoked_at FROM keys ORDER BY team, name, created_at").fetchall()
    return [KeyInfo(*r) for r in rows]


def revoke_key(state: GovernanceState, name_or_id: str) -> int:
    """Revoke the active key with this name or id; returns how many were revoked."""
    with state.transaction():  # each revocation is audited with the change (verify-audit finds a key made active again)
        index = _by_hash(state)
        rows = state.con.execute(
            "UPDATE keys SET revoked_at = ? WHERE (name = ? OR key_id = ?) AND revoked_at IS NULL "
            "RETURNING key_hash, key_id, team, name, created_at, revoked_at",
            [_now(), name_or_id, name_or_id],
        ).fetchall()
        for r in rows:
            audit.append(state, audit.AuditEntry(outcome="admin", key_name=r[3], team=r[2], message=audit.revocation_message(r[1])))
        for r in rows:
            index[r[0]] = KeyInfo(*r[1:])
    return len(rows)


def authenticate(state: GovernanceState, key: str | None) -> KeyInfo | None:
    """The key's record if it exists (revoked or not: the caller tells them apart)."""
    if isinstance(key, KeyHash):
        with state.lock:
            return _by_hash(state).get(str(key))
    if not key or not key.startswith(PREFIX):
        return None
    with state.lock:
        return _by_hash(state).get(hash_key(key))


def scram_login(state: GovernanceState, name: str) -> tuple[KeyHash, KeyInfo, ScramVerifier] | None:
    """The newest key named `name` (active first) with its SCRAM verifier, or None."""
    with state.lock:
        row = state.con.execute(
            "SELECT k.key_hash, s.salt, s.stored_key, s.server_key, s.iterations FROM keys k JOIN key_scram s USING (key_id) "
            "WHERE k.name = ? ORDER BY k.revoked_at IS NULL DESC, k.created_at DESC LIMIT 1", [name]).fetchone()
        if row is None:
            return None
        info = _by_hash(state)[row[0]]
    return KeyHash(row[0]), info, ScramVerifier(bytes(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))
