"""The HTTP face as a client that sends what it should not: huge bodies, malformed JSON, wrong
methods and paths — each refused with the documented {"error": …} body and an audit row; and
answers that JSON or CSV cannot hold plainly (NaN, Infinity, lists, structs). Real uvicorn."""

from __future__ import annotations

import io
import json

import httpx
import pyarrow as pa
import pytest
from support.governance_env import Env, ServerThread, env  # noqa: F401

from governance.gateway import AUDIT_SQL_PREFIX, Gateway
from governance.keys import create_key
from governance.rules import load_rules
from governance.server import MAX_BODY_BYTES, create_app
from governance.state import GovernanceState


@pytest.fixture
def served(env: Env):
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    key, _ = create_key(state, "analysts", "ana")
    with ServerThread(create_app(gateway)) as srv:
        yield srv, gateway, {"Authorization": f"Bearer {key}"}
    gateway.close()
    state.close()


def _audited(gw: Gateway, audit_id: str) -> dict:
    cols = ["key_name", "team", "rule", "outcome", "sql", "message"]
    row = gw.state.con.execute(f"SELECT {', '.join(cols)} FROM audit WHERE audit_id = ?", [audit_id]).fetchone()
    assert row is not None, f"no audit row for {audit_id}"
    return dict(zip(cols, row))


def _strict(text: str):
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=no_constant)


def _refused(r: httpx.Response, status: int, rule: str) -> dict:
    assert r.status_code == status, r.text
    err = _strict(r.text)["error"]
    assert err["rule"] == rule and err["message"] and r.headers["X-Audit-Id"] == err["audit_id"]
    return err


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_body_above_the_cap_is_refused_and_audited_with_a_bounded_prefix(served, how: str) -> None:
    srv, gw, auth = served
    sql = "SELECT 1 -- " + "x" * (MAX_BODY_BYTES * 2)
    body = json.dumps({"sql": sql}).encode()
    content = body if how == "content-length" else (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = httpx.post(f"{srv.url}/v1/query", content=content, headers=auth | {"Content-Type": "application/json"}, timeout=60)
    err = _refused(r, 413, "request_too_large")
    row = _audited(gw, err["audit_id"])
    assert (row["key_name"], row["team"], row["outcome"]) == ("ana", "analysts", "refused")
    assert row["sql"].startswith('{"sql": "SELECT 1 -- xxx') and len(row["sql"]) <= AUDIT_SQL_PREFIX


@pytest.mark.parametrize("body", [b'{"sql": ', b'{"format": "json"}', b'{"sql": 42}', b"[1, 2]", b"sql=SELECT 1"])
def test_bodies_the_framework_rejects_are_audited_with_the_error_body(served, body: bytes) -> None:
    srv, gw, auth = served
    r = httpx.post(f"{srv.url}/v1/query", content=body, headers=auth | {"Content-Type": "application/json"}, timeout=30)
    err = _refused(r, 422, "invalid_request")
    row = _audited(gw, err["audit_id"])
    assert row["key_name"] == "ana" and row["rule"] == "invalid_request" and "POST /v1/query" in row["message"]


@pytest.mark.parametrize("method,path,status,rule", [
    ("GET", "/v1/query", 405, "method_not_allowed"), ("PUT", "/v1/estimate", 405, "method_not_allowed"),
    ("DELETE", "/v1/usage", 405, "method_not_allowed"), ("GET", "/v1/nothing", 404, "not_found"), ("POST", "/admin", 404, "not_found"),
])
def test_wrong_methods_and_paths_are_audited_with_the_error_body(served, method, path, status, rule) -> None:
    srv, gw, auth = served
    r = httpx.request(method, f"{srv.url}{path}", headers=auth, timeout=30)
    err = _refused(r, status, rule)
    assert _audited(gw, err["audit_id"])["rule"] == rule


def test_json_answers_have_no_nan_or_infinity(served) -> None:
    srv, _, auth = served
    sql = "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::FLOAT AS c, [1.5, 'nan'::DOUBLE] AS l, {'v': 'inf'::DOUBLE} AS s, 2.5 AS d"
    r = httpx.post(f"{srv.url}/v1/query", json={"sql": sql}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert _strict(r.text)["rows"] == [[None, None, None, [1.5, None], {"v": None}, 2.5]]


def test_csv_of_list_and_struct_columns_writes_their_json_text(served) -> None:
    srv, _, auth = served
    sql = "SELECT [1, 2] AS l, {'a': 1, 'b': 'x'} AS s, MAP {'k': 3} AS m, 7 AS n"
    r = httpx.post(f"{srv.url}/v1/query", json={"sql": sql, "format": "csv"}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    header, line = r.text.strip().splitlines()
    assert header == '"l","s","m","n"'
    import csv
    values = next(csv.reader([line]))
    assert [json.loads(v) for v in values[:2]] == [[1, 2], {"a": 1, "b": "x"}] and values[3] == "7"


def test_arrow_and_json_answers_are_written_in_batches_and_read_back_whole(served) -> None:
    srv, _, auth = served
    sql = "SELECT y, count(*) AS n FROM marts.big GROUP BY y ORDER BY y"
    j = httpx.post(f"{srv.url}/v1/query", json={"sql": sql}, headers=auth, timeout=30)
    a = httpx.post(f"{srv.url}/v1/query", json={"sql": sql, "format": "arrow"}, headers=auth, timeout=30)
    table = pa.ipc.open_stream(io.BytesIO(a.content)).read_all()
    assert _strict(j.text)["rows"] == [list(r.values()) for r in table.to_pylist()] and len(table) == 97
