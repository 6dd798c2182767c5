"""A query that cannot be planned names the unknown table or column and the closest granted
names; a GROUP BY mistake gets its own hint; nothing ungranted is ever suggested."""

from __future__ import annotations

import psycopg
import pytest
from support.pg_gateway import Pg, pg  # noqa: F401 (pg is a fixture)

CASES = [
    ("SELECT sum(unit) FROM marts.demand", "unknown column `unit`; did you mean `units`?", "42703"),
    ("SELECT categroy, sum(units) FROM marts.demand GROUP BY 1", "unknown column `categroy`; did you mean `category`?", "42703"),
    ("SELECT count(*) FROM marts.demnd", "unknown table `marts.demnd` (or not granted to your team); did you mean `marts.demand`?", "42P01"),
    ("SELECT category, sum(units) FROM marts.demand", "a selected column is neither in GROUP BY nor inside an aggregate", "42803"),
    ("SELECT pass_type, count(*) FROM passes GROUP BY pass_type, birth_yeer", "unknown column `birth_yeer`", "42703"),
]


def test_plan_failures_get_hints_from_the_grant(pg: Pg) -> None:
    for sql, hint, state in CASES:
        r = pg.gateway.query(pg.keys["analysts"], sql)
        assert r.rule == "plan_failed" and r.message.startswith(hint), (sql, r.message)
        with psycopg.connect(**pg.dsn()) as c, pytest.raises(psycopg.Error) as e:
            c.execute(sql)
        assert e.value.sqlstate == state and hint in str(e.value)
    # an identity column the team may not name is never offered, however close the typo
    r = pg.gateway.query(pg.keys["analysts"], "SELECT count(*) FROM marts.passes WHERE holder_emial = 'x'")
    assert r.message == "unknown column `holder_emial`" and "holder_email" not in r.message
    # a cleared team gets identity attributes inside cells (birth_year), never contact details
    cleared = pg.gateway.query(pg.keys["cleared"], "SELECT count(*) FROM marts.passes WHERE holder_emial = 'x'")
    assert "holder_email" not in cleared.message
    cleared = pg.gateway.query(pg.keys["cleared"], "SELECT count(*) FROM marts.passes WHERE birth_yeer = 1990")
    assert cleared.message == "unknown column `birth_yeer`; did you mean `birth_year`?"
    # nor a relation outside the grant
    r = pg.gateway.query(pg.keys["analysts"], "SELECT * FROM secret.salary")
    assert "salaries" not in r.message
