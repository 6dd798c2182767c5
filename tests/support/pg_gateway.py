"""A gateway with its Postgres (and HTTP) listeners on 127.0.0.1 and a key per team, for the
tests of the PostgreSQL endpoint (tests/test_pgwire*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.gateway import Gateway
from governance.keys import create_key
from governance.pgwire.server import PgServer
from governance.rules import load_rules
from governance.state import GovernanceState
from support.governance_env import TEAM_YAML, Env, make_env, publish

TIMEOUT_SQL = "SELECT count(*) FROM marts.big a, marts.big b, marts.big c"  # stopped by the 2 s team timeout
BIG_SQL = "SELECT sum(x), sum(y) FROM marts.big"  # 4.8 units: above the tight team's 0.5 cap
SPEND_SQL = "SELECT sum(units) FROM marts.demand"  # 0.16 units


def _team(env: Env, team: str, **values) -> None:
    base = dict(per_day=50, per_month=500, per_query=20, concurrency=4, timeout=2, clearance="false")
    text = TEAM_YAML.format(team=team, **{**base, **values})
    if "max_rows" in values:
        text = text.replace("max_result_rows: 1000", f"max_result_rows: {values['max_rows']}")
    (env.rules_dir / f"{team}.yml").write_text(text)


class Pg:
    """A gateway with its HTTP and Postgres listeners and a key per team."""

    def __init__(self, env: Env):
        _team(env, "tight", per_day=0.5, per_query=0.5)
        _team(env, "bulk", max_rows=1_100_000, timeout=120)  # its timeout covers streaming a million rows
        _team(env, "ghost")
        _team(env, "broke", per_day=0.3, per_query=0.3)  # SPEND_SQL fits once a day, not twice
        publish(env)  # the new teams' relations are built at publish
        self.env = env
        self.state = GovernanceState(env.governance_db)
        self.keys = {t: create_key(self.state, t, f"{t}-key")[0] for t in ("analysts", "cleared", "tight", "bulk", "ghost", "broke")}
        (env.rules_dir / "ghost.yml").unlink()  # a key whose team has no rules (any more)
        self.gateway = Gateway(self.state, load_rules(env.rules_dir), env.published, env.manifest)
        self.server = PgServer(self.gateway, port=0).start()
        self.port = self.server.port

    def dsn(self, team: str = "analysts", password: str | None = None) -> dict:
        return dict(host="127.0.0.1", port=self.port, user=f"{team}-key", password=self.keys.get(team, "") if password is None else password, dbname="civicflow")

    def audit(self, audit_id: str) -> tuple:
        return self.state.con.execute("SELECT team, key_name, outcome, rule, estimate, actual, result_rows, tables, columns FROM audit WHERE audit_id = ?", [audit_id]).fetchone()

    def close(self) -> None:
        self.server.stop()
        self.gateway.close()
        self.state.close()


@pytest.fixture
def pg(tmp_path: Path):
    p = Pg(make_env(tmp_path / "env"))
    yield p
    p.close()


def audit_id_of(message: str) -> str:
    return message.rsplit("audit ", 1)[1].split(")")[0]


