"""Admin commands while `civicflow serve` holds governance.duckdb: the server runs in its own
process (as in production), so the CLI called here can reach it only over HTTP — DuckDB refuses
it the file, which the test checks first."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from test_governance_support import Env, free_port, make_env
from typer.testing import CliRunner

from governance.admin import AdminEndpoint, admin_file, read_admin_file, write_admin_file
from governance.client import Client, GatewayError
from governance.rules import load_rules
from governance.state import GovernanceState, StateBusy
from governance.usage import usage_report

PROJECT = Path(__file__).resolve().parent.parent
SQL = "SELECT category, count(*) AS n FROM marts.demand GROUP BY 1 ORDER BY 1"


class ServerProcess:
    """`civicflow serve` in a subprocess on 127.0.0.1:<free port>; ready once its admin file
    is written and the gateway answers."""

    def __init__(self, env: Env, log: Path):
        self.env, self.port = env, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--home", str(env.home), "--rules", str(env.rules_dir),
               "--manifest", str(env.manifest), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})

    def wait_ready(self, seconds: float = 180) -> "ServerProcess":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"civicflow serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if admin_file(self.env.governance_db).exists():
                try:
                    httpx.get(f"{self.url}/v1/usage", timeout=2)
                    return self
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"civicflow serve did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def served(tmp_path: Path):
    env = make_env(tmp_path / "env")
    srv = ServerProcess(env, tmp_path / "serve.log")
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def _cli(*args: str):
    from pipelines.cli import app
    from pipelines.cli import governance as governance_cli

    governance_cli.console.width = 200
    return CliRunner().invoke(app, list(args))


def test_admin_commands_go_through_the_running_server(served: ServerProcess) -> None:
    env = served.env
    home = ["--home", str(env.home)]
    with pytest.raises(StateBusy):  # the server holds the file: only HTTP can work from here
        GovernanceState(env.governance_db, wait_seconds=0.2)
    path = admin_file(env.governance_db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    endpoint = read_admin_file(path)
    assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.pid == served.proc.pid

    created = _cli("keys", "create", "--team", "analysts", "--name", "remote-ana", *home)
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("cfk_")
    assert _cli("keys", "create", "--team", "nobody", "--name", "x", *home).exit_code == 1  # the server's rules decide
    listed = _cli("keys", "list", *home)
    assert listed.exit_code == 0 and "remote-ana" in listed.output and key not in listed.output

    with Client(served.url, key) as c:
        df = c.query(SQL)
        assert df["n"].to_list() == [6667, 6667, 6666]
        spent = c.last.actual
    budget = _cli("budget", *home)  # no --rules: the server's
    assert budget.exit_code == 0 and f"{spent:.3f}" in budget.output and "analysts" in budget.output
    verified = _cli("governance", "verify-audit", *home)
    # the readiness probe (GET /v1/usage without a key, refused), the key's creation, the query
    assert verified.exit_code == 0 and "audit chain intact: 3 rows" in verified.output

    revoked = _cli("keys", "revoke", "remote-ana", *home)
    assert revoked.exit_code == 0 and "revoked 1" in revoked.output
    with Client(served.url, key) as c, pytest.raises(GatewayError) as err:
        c.query(SQL)
    assert err.value.status == 401 and err.value.rule == "revoked_key"

    # the daily usage report (a Dagster asset, another process) also asks the server
    today = datetime.now(UTC).date()
    report = usage_report(env.governance_db, today, load_rules(env.rules_dir)).to_dicts()
    analysts = next(r for r in report if r["team"] == "analysts")
    assert (analysts["queries"], analysts["refused"], analysts["cost"]) == (1, 1, pytest.approx(spent))

    # stopping the server removes the admin file; the same commands then open the file directly
    assert served.stop() == 0
    assert not path.exists()
    after = _cli("keys", "list", *home)
    assert after.exit_code == 0 and "remote-ana" in after.output
    with GovernanceState(env.governance_db) as st:
        rows = st.con.execute("SELECT outcome, rule, key_name, message FROM audit ORDER BY seq").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("refused", "unauthenticated"), ("admin", None), ("ok", None), ("admin", None), ("refused", "revoked_key")]
    assert "created" in rows[1][3] and "revoked" in rows[3][3] and rows[1][2] == "remote-ana"
    assert _cli("governance", "verify-audit", *home).exit_code == 0


def test_admin_listener_needs_the_token_and_binds_loopback_only(served: ServerProcess) -> None:
    endpoint = read_admin_file(admin_file(served.env.governance_db))
    port = int(endpoint.url.rsplit(":", 1)[1])
    op = f"{endpoint.url}/v1/admin/keys/list"
    missing = httpx.post(op, json={})
    wrong = httpx.post(op, json={}, headers={"Authorization": "Bearer " + "x" * len(endpoint.token)})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["rule"] == "admin_unauthenticated" and wrong.json()["error"]["audit_id"]
    good = httpx.post(op, json={}, headers={"Authorization": f"Bearer {endpoint.token}"})
    assert good.status_code == 200 and good.json() == {"keys": []}
    # not on the gateway's port, and not on any address but 127.0.0.1 (127.0.0.2 is loopback too,
    # so a socket bound to 0.0.0.0 would answer there)
    assert httpx.post(f"{served.url}/v1/admin/keys/list", json={}, headers={"Authorization": f"Bearer {endpoint.token}"}).status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.2:{port}/v1/admin/keys/list", json={}, headers={"Authorization": f"Bearer {endpoint.token}"}, timeout=5)
    assert served.stop() == 0
    with GovernanceState(served.env.governance_db) as st:
        refused = st.con.execute("SELECT count(*) FROM audit WHERE rule = 'admin_unauthenticated'").fetchone()[0]
    assert refused == 2


def test_a_stale_admin_file_falls_back_to_the_database(tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    # a server killed with SIGKILL leaves its file behind; nothing listens on its port any more
    write_admin_file(admin_file(env.governance_db), AdminEndpoint(f"http://127.0.0.1:{free_port()}", "stale", 999999, ""))
    created = _cli("keys", "create", "--team", "analysts", "--name", "after-crash", "--home", str(env.home), "--rules", str(env.rules_dir))
    assert created.exit_code == 0, created.output
    with GovernanceState(env.governance_db) as st:
        assert st.con.execute("SELECT name FROM keys").fetchall() == [("after-crash",)]
