"""The admin operations, one function each, run either by the server for an admin request or
by the CLI on governance.duckdb directly when no server holds it — the same code both ways,
so the answer does not depend on where it was computed.

Each takes the state and the team rules (the server's while it runs, the CLI's --rules
otherwise) and returns plain JSON. Creating and revoking keys are written to the audit chain in
the same transaction as the change (by governance.keys itself).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from governance import audit, ledger
from governance.admin import AdminError, ask_server
from governance.keys import create_key, list_keys, revoke_key
from governance.rules import TeamRules
from governance.state import GovernanceState
from governance.usage import usage_counts

Rules = dict[str, TeamRules]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def keys_create(state: GovernanceState, rules: Rules, team: str, name: str) -> dict:
    if team not in rules:
        raise AdminError(f"no rules file for team {team!r} (teams: {', '.join(sorted(rules)) or 'none'})")
    try:
        key, info = create_key(state, team, name)  # audited in the same transaction
    except ValueError as e:
        raise AdminError(str(e)) from None
    return {"key": key, "key_id": info.key_id, "team": team, "name": name}


def keys_list(state: GovernanceState, rules: Rules) -> dict:
    return {"keys": [{"key_id": k.key_id, "team": k.team, "name": k.name, "created_at": _iso(k.created_at), "revoked_at": _iso(k.revoked_at)}
                     for k in list_keys(state)]}


def keys_revoke(state: GovernanceState, rules: Rules, name_or_id: str) -> dict:
    n = revoke_key(state, name_or_id)  # audited in the same transaction, one row per key
    return {"revoked": n}


def budget(state: GovernanceState, rules: Rules) -> dict:
    today = datetime.now(UTC).date()
    return {"day": today.isoformat(), "teams": [ledger.team_usage(state, rules[t], today) for t in sorted(rules)]}


def budget_by_key(state: GovernanceState, rules: Rules) -> dict:
    today = datetime.now(UTC).date()
    return {"day": today.isoformat(), "keys": ledger.spend_by_key(state, today)}


def budget_by_day(state: GovernanceState, rules: Rules, days: int = 30) -> dict:
    today = datetime.now(UTC).date()
    return {"day": today.isoformat(), "days": days, "spend": ledger.spend_by_day(state, days, today)}


def audit_show(state: GovernanceState, rules: Rules, audit_id: str) -> dict:
    """One audit row, as an analyst quotes it when asking for help (read only)."""
    with state.lock:
        row = state.con.execute(f"SELECT {', '.join(audit.FIELDS)} FROM audit WHERE audit_id = ?", [audit_id.strip()]).fetchone()
    if row is None:
        raise AdminError(f"no audit row with id {audit_id!r}")
    entry = dict(zip(audit.FIELDS, row, strict=True))
    entry["ts"] = _iso(entry["ts"])
    return {"entry": entry}


def verify_audit(state: GovernanceState, rules: Rules, anchors: list[str] | None = None) -> dict:
    """`anchors`: head files of usage exports (`usage-<day>.audit-head.json`), checked with audit.anchor."""
    heads = [pair for path in anchors or () for pair in audit.read_anchors(Path(path))]
    with state.lock:
        n = state.con.execute("SELECT count(*) FROM audit").fetchone()[0]
        problems = audit.verify(state, heads)
    return {"rows": n, "problems": problems}


def audit_head(state: GovernanceState, rules: Rules) -> dict:
    return audit.head(state)


def usage(state: GovernanceState, rules: Rules, day: str) -> dict:
    with state.lock:
        return {"teams": usage_counts(state.con, date.fromisoformat(day))}


OPS: dict[str, Callable[..., dict]] = {
    "keys/create": keys_create, "keys/list": keys_list, "keys/revoke": keys_revoke,
    "budget": budget, "budget/keys": budget_by_key, "budget/days": budget_by_day,
    "audit/verify": verify_audit, "audit/show": audit_show, "audit/head": audit_head, "usage": usage,
}
NEEDS_RULES = {"keys/create", "budget"}  # the others work even when a rule file is broken


def run(governance_db: Path, op: str, args: dict, load_rules: Callable[[], Rules]) -> dict:
    """Ask the running server, or else open governance.duckdb and do it here (StateBusy if
    another process holds the file without having left an admin file)."""
    answer = ask_server(governance_db, op, args)
    if answer is not None:
        return answer
    with GovernanceState(governance_db) as state:
        return OPS[op](state, load_rules() if op in NEEDS_RULES else {}, **args)
