"""The audit chain as an attacker with write access to governance.duckdb would attack it: each
tampering below is one `verify` must report (issue 15, point 4). Real gateway, real files."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import pytest
from support.governance_env import Env, env  # noqa: F401

from governance import audit
from governance.admin_ops import verify_audit
from governance.audit import FIELDS, GENESIS
from governance.gateway import Gateway
from governance.keys import create_key
from governance.rules import load_rules
from governance.state import GovernanceState


@pytest.fixture
def used(env: Env):
    """A gateway after a day of use: a key, three billed queries, a refusal."""
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    key, _ = create_key(state, "analysts", "ana")
    ok = [gateway.query(key, f"SELECT sum(units) + {i} AS s FROM marts.demand") for i in range(3)]
    assert [r.outcome for r in ok] == ["ok"] * 3
    assert gateway.query(key, "SELECT holder_email FROM marts.passes").outcome == "refused"
    assert audit.verify(state) == []
    yield gateway
    gateway.close()
    state.close()


def _sql(gw: Gateway, sql: str, params=()):
    return gw.state.con.execute(sql, list(params)).fetchall()


def _rehash(gw: Gateway, key: bytes | None) -> None:
    """Recompute every row's hash from the first, as a forger would: with the stolen key (HMAC)
    or, without it, with plain SHA-256 (the chain before it was keyed)."""
    rows = _sql(gw, f"SELECT {', '.join(FIELDS)} FROM audit ORDER BY seq")
    prev = GENESIS
    for r in rows:
        row = {k: audit._canonical(v) for k, v in zip(FIELDS, r)}
        payload = json.dumps({k: (str(v) if k == "ts" else v) for k, v in row.items()}, sort_keys=True, default=str)
        digest = (hmac.new(key, (prev + payload).encode(), hashlib.sha256).hexdigest() if key
                  else hashlib.sha256((prev + payload).encode()).hexdigest())
        _sql(gw, "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, digest, row["seq"]])
        prev = digest


def test_the_key_lives_outside_the_database_with_mode_0600_and_every_head_is_anchored(used: Gateway, env: Env) -> None:
    key_file, anchor_file = env.home / "audit.key", env.home / "audit.anchor"
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = key_file.read_text().strip()
    assert len(bytes.fromhex(secret)) == 32 and secret.encode() not in env.governance_db.read_bytes()
    rows = _sql(used, "SELECT seq, hash FROM audit ORDER BY seq")
    assert audit.read_anchors(anchor_file) == rows  # one anchor line per committed row, in order
    os.chmod(key_file, 0o644)
    assert any("mode 0644" in p for p in audit.verify(used.state))


def test_an_edited_row_is_found(used: Gateway) -> None:
    seq = _sql(used, "SELECT seq FROM audit WHERE outcome = 'refused'")[0][0]
    _sql(used, "UPDATE audit SET outcome = 'ok', rule = NULL WHERE seq = ?", [seq])
    assert any(p.startswith(f"seq {seq}: hash does not match") for p in audit.verify(used.state))


def test_a_deleted_middle_row_is_found(used: Gateway) -> None:
    _sql(used, "DELETE FROM audit WHERE seq = 2")
    problems = audit.verify(used.state)
    assert any("expected seq 2" in p for p in problems) and any("anchored seq 2 is not in the table" in p for p in problems)


def test_deleted_last_rows_are_found(used: Gateway) -> None:
    last = _sql(used, "SELECT max(seq) FROM audit")[0][0]
    _sql(used, "DELETE FROM audit WHERE seq > ?", [last - 2])
    problems = audit.verify(used.state)
    assert any(f"record seq {last} but the table ends at seq {last - 2}: 2 last row(s)" in p for p in problems)


def test_an_emptied_table_is_found(used: Gateway) -> None:
    _sql(used, "DELETE FROM audit")
    _sql(used, "DELETE FROM ledger")  # the attacker resets spend too: still found
    problems = audit.verify(used.state)
    assert any("the table ends at seq 0" in p for p in problems)


def test_a_rewrite_with_recomputed_hashes_is_found_with_or_without_the_key(used: Gateway, env: Env) -> None:
    seq = _sql(used, "SELECT seq FROM audit WHERE outcome = 'refused'")[0][0]
    _sql(used, "UPDATE audit SET team = 'cleared' WHERE seq = ?", [seq])
    _rehash(used, None)  # without the key: plain SHA-256 everywhere
    without = audit.verify(used.state)
    assert any("hash does not match" in p for p in without)
    _rehash(used, bytes.fromhex((env.home / "audit.key").read_text().strip()))  # the key was stolen too
    with_key = audit.verify(used.state)
    assert not any("hash does not match" in p for p in with_key)  # the chain itself is consistent again…
    assert any(p == f"seq {seq}: hash differs from the anchored one (the chain was rewritten)" for p in with_key)  # …its anchor is not


def test_a_key_inserted_directly_is_found(used: Gateway) -> None:
    forged = "cfk_deadbeef_" + secrets.token_urlsafe(32)
    _sql(used, "INSERT INTO keys VALUES ('deadbeef', ?, 'cleared', 'mallory', now()::TIMESTAMP, NULL)", [hashlib.sha256(forged.encode()).hexdigest()])
    problems = audit.verify(used.state)
    assert problems == ["key deadbeef (team cleared) has no matching creation row in the audit (inserted or changed directly)"]


def test_a_key_moved_to_another_team_is_found(used: Gateway) -> None:
    _sql(used, "UPDATE keys SET team = 'cleared' WHERE name = 'ana'")  # escalate to the cleared team
    assert any("has no matching creation row" in p for p in audit.verify(used.state))


def test_a_revoked_key_made_active_again_is_found(used: Gateway) -> None:
    from governance.keys import revoke_key

    assert revoke_key(used.state, "ana") == 1 and audit.verify(used.state) == []
    _sql(used, "UPDATE keys SET revoked_at = NULL WHERE name = 'ana'")
    assert any("was revoked (audit) but is active again" in p for p in audit.verify(used.state))


def test_a_deleted_ledger_row_a_spend_reset_is_found(used: Gateway) -> None:
    (entry, team), *_ = _sql(used, "SELECT entry_id, team FROM ledger ORDER BY created_at")
    _sql(used, "DELETE FROM ledger WHERE entry_id = ?", [entry])
    problems = audit.verify(used.state)
    assert len(problems) == 1 and f"ledger row {entry}" in problems[0] and "the spend was reset" in problems[0]


def test_a_lowered_charge_is_found(used: Gateway) -> None:
    _sql(used, "UPDATE ledger SET actual = 0")
    assert sum("charged 0 but audit id" in p for p in audit.verify(used.state)) == 3


def test_the_usage_exports_head_catches_what_the_anchor_file_lost(used: Gateway, env: Env, tmp_path: Path) -> None:
    """The attacker deletes the last rows and the anchor file's last lines: the head copied
    into the day's usage export still shows them."""
    head = audit.head(used.state)
    export = tmp_path / "usage-2026-01-01.audit-head.json"
    export.write_text(json.dumps(head) + "\n")
    assert verify_audit(used.state, {}, [str(export)])["problems"] == []
    _sql(used, "DELETE FROM audit WHERE seq > ?", [head["seq"] - 3])
    anchor = env.home / "audit.anchor"
    anchor.write_text("".join(line + "\n" for line in anchor.read_text().splitlines()[:-3]))
    assert not any("last row" in p for p in audit.verify(used.state))  # the anchor file alone was fooled
    answer = verify_audit(used.state, {}, [str(export)])
    assert any(f"record seq {head['seq']} but the table ends at seq {head['seq'] - 3}" in p for p in answer["problems"])


def test_the_chain_cannot_be_extended_without_its_key(used: Gateway, env: Env) -> None:
    (env.home / "audit.key").unlink()
    used.state.cache.pop("audit_key", None)
    with pytest.raises(audit.AuditKeyError, match="audit.key is missing"):  # nothing is served unaudited; no fresh key
        used.query(None, "SELECT 1")
    assert not (env.home / "audit.key").exists()
    assert audit.verify(used.state) == [f"{env.home / 'audit.key'} is missing: the chain cannot be verified"]
