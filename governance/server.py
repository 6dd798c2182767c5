"""The HTTP face of the gateway (FastAPI): POST /v1/query, POST /v1/estimate, GET /v1/usage.

Bearer key in the Authorization header. Results as JSON (default), CSV or Arrow IPC stream
(`format` in the body, or the Accept header). Refusals carry the rule, the gateway's own
message and the audit id — never DuckDB's error text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from governance.gateway import Gateway, Result
from governance.rules import load_rules
from governance.sandbox import SandboxLimits
from governance.state import GovernanceState
from warehouse.catalog_url import CatalogUrl

ARROW_MEDIA = "application/vnd.apache.arrow.stream"


class QueryBody(BaseModel):
    sql: str
    format: str | None = None  # json | csv | arrow


def _key(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _json_default(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _error(result: Result) -> JSONResponse:
    return JSONResponse(
        status_code=result.status,
        content={"error": {"rule": result.rule, "message": result.message, "audit_id": result.audit_id}},
        headers={"X-Audit-Id": result.audit_id},
    )


def _meta(result: Result) -> dict:
    return {
        "audit_id": result.audit_id, "estimate": result.estimate, "actual": result.actual, "truncated": result.truncated,
        "suppressed_groups": result.suppressed_groups, "tables": result.tables, "columns": result.columns,
        "snapshot": result.snapshot, "snapshot_as_of": result.as_of,
    }


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="civicflow query gateway", version="1")
    app.state.gateway = gateway

    @app.post("/v1/query")
    def query(body: QueryBody, request: Request, authorization: str | None = Header(default=None)):
        result = gateway.query(_key(authorization), body.sql)
        if result.outcome != "ok":
            return _error(result)
        fmt = (body.format or "").lower() or ("arrow" if ARROW_MEDIA in request.headers.get("accept", "") else "csv" if "text/csv" in request.headers.get("accept", "") else "json")
        meta = _meta(result)
        headers = {
            "X-Audit-Id": result.audit_id, "X-Cost-Estimate": f"{result.estimate:.6f}", "X-Cost-Actual": f"{result.actual:.6f}",
            "X-Truncated": str(result.truncated).lower(), "X-Suppressed-Groups": str(result.suppressed_groups),
            "X-Snapshot": result.snapshot or "", "X-Snapshot-As-Of": result.as_of or "",
        }
        table: pa.Table = result.table
        if fmt == "arrow":
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return Response(sink.getvalue(), media_type=ARROW_MEDIA, headers=headers)
        if fmt == "csv":
            sink = io.BytesIO()
            pacsv.write_csv(table, sink)
            return Response(sink.getvalue(), media_type="text/csv", headers=headers)
        payload = meta | {"columns_out": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}
        return Response(json.dumps(payload, default=_json_default), media_type="application/json", headers=headers)

    @app.post("/v1/estimate")
    def estimate(body: QueryBody, authorization: str | None = Header(default=None)):
        result = gateway.query(_key(authorization), body.sql, dry_run=True)
        if result.outcome != "estimate":
            return _error(result)
        return _meta(result)

    @app.get("/v1/usage")
    def usage(authorization: str | None = Header(default=None)):
        result = gateway.usage(_key(authorization))  # audited, accepted or refused
        if result.outcome != "usage":
            return _error(result)
        return JSONResponse(result.usage | {"audit_id": result.audit_id}, headers={"X-Audit-Id": result.audit_id})

    @app.get("/v1/catalog")
    def catalog(authorization: str | None = Header(default=None)):
        """What your team may query: relations, columns, types, dbt descriptions, privacy
        classes and row counts, with the snapshot they come from."""
        result = gateway.catalog(_key(authorization))  # audited, accepted or refused
        if result.outcome != "catalog":
            return _error(result)
        body = {"snapshot": result.snapshot, "snapshot_as_of": result.as_of, "relations": result.catalog, "audit_id": result.audit_id}
        return JSONResponse(body, headers={"X-Audit-Id": result.audit_id, "X-Snapshot": result.snapshot or ""})

    return app


def build_gateway(
    governance_db: Path, rules_dir: Path, published_dir: Path, manifest: Path, limits: SandboxLimits = SandboxLimits(),
    credentials: Sequence[CatalogUrl] = (),
) -> Gateway:
    """Load (and validate) the rules first: a malformed rule file stops the start."""
    rules = load_rules(rules_dir)
    return Gateway(GovernanceState(governance_db), rules, published_dir, manifest, limits, credentials)
