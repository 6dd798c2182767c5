"""The gateway's OpenAPI document (descriptions, the bearer scheme, every error with its body)
and `/docs`, which renders from assets the gateway serves itself: nothing from a CDN."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from support.chromium import chromium, open_page
from support.governance_env import Env, ServerThread, env  # noqa: F401 (env is a fixture)

from governance.gateway import Gateway
from governance.rules import load_rules
from governance.server import create_app
from governance.state import GovernanceState

ENDPOINTS = {("post", "/v1/query"), ("post", "/v1/estimate"), ("get", "/v1/usage"), ("get", "/v1/catalog")}


@pytest.fixture
def http(env: Env):
    state = GovernanceState(env.governance_db)
    gateway = Gateway(state, load_rules(env.rules_dir), env.published, env.manifest)
    with ServerThread(create_app(gateway)) as srv:
        yield srv
    gateway.close()
    state.close()


def test_openapi_describes_every_endpoint_its_bearer_scheme_and_every_error(http) -> None:
    doc = httpx.get(f"{http.url}/openapi.json", timeout=30).json()
    assert doc["info"]["description"].startswith("Governed SQL on the warehouse snapshot")
    assert doc["components"]["securitySchemes"] == {"apiKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "cfk_…",
        "description": "Your personal key (`civicflow keys create --team <team> --name <you>`), as `Authorization: Bearer cfk_…`."}}
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert set(doc["components"]["schemas"]["ErrorDetail"]["properties"]) == {"rule", "message", "audit_id"}
    ops = {(m, p): op for p, methods in doc["paths"].items() for m, op in methods.items()}
    assert set(ops) == ENDPOINTS  # /docs and its assets are not API endpoints
    for where, op in ops.items():
        assert op["summary"] and len(op["description"]) > 80, where
        assert op["security"] == [{"apiKey": []}], where
        assert "authorization" not in {p["name"].lower() for p in op.get("parameters", [])}, where  # the scheme says it
        errors = {int(c): r for c, r in op["responses"].items() if int(c) >= 400}
        assert {401, 403, 413, 500} <= set(errors), where
        for code, r in errors.items():
            assert r["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (where, code)
            assert r["description"], (where, code)
    assert {400, 402, 422, 429, 503, 504} <= {int(c) for c in ops[("post", "/v1/query")]["responses"]}
    assert set(ops[("post", "/v1/query")]["responses"]["200"]["content"]) == {"application/json", "text/csv", "application/vnd.apache.arrow.stream"}
    # a declared error is the body the gateway really sends
    refused = httpx.post(f"{http.url}/v1/query", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer cfk_nobody"}, timeout=30)
    assert refused.status_code == 401 and set(refused.json()["error"]) == {"rule", "message", "audit_id"}


def test_docs_page_and_its_assets_are_served_locally(http) -> None:
    page = httpx.get(f"{http.url}/docs", timeout=30)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls  # no CDN, no other host
    for u in urls:
        assert httpx.get(f"{http.url}{u}", timeout=30).status_code == 200, u
    assert "validatorUrl" in page.text and "null" in page.text  # no badge image from validator.swagger.io
    assert httpx.get(f"{http.url}/redoc", timeout=30).status_code == 404  # ReDoc loads from a CDN: not served


def test_docs_render_the_endpoints_in_chromium_with_no_request_leaving_the_host(http, tmp_path: Path) -> None:
    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = open_page(f"{http.url}/docs", width=1200, height=1600, settle_s=3.0)
    (tmp_path / "docs.png").write_bytes(page.screenshot)
    if os.environ.get("CIVICFLOW_KEEP_SCREENSHOT"):  # to look at it: CIVICFLOW_KEEP_SCREENSHOT=/tmp/docs.png
        Path(os.environ["CIVICFLOW_KEEP_SCREENSHOT"]).write_bytes(page.screenshot)
    assert page.requests and all(u.startswith(f"{http.url}/") for u in page.requests), page.requests
    assert f"{http.url}/openapi.json" in page.requests
    for method, path in ENDPOINTS:  # Swagger UI drew an operation block per endpoint, from the local script
        assert re.search(rf'opblock-{method}.*?data-path="{re.escape(path)}"', page.dom, re.S), (method, path)
    assert "Run one SELECT" in page.dom and "What your team may query" in page.dom
    assert "Authorize" in page.dom  # the bearer scheme
