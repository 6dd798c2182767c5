"""The HTTP face of the gateway (FastAPI): POST /v1/query, POST /v1/estimate, GET /v1/usage.

Bearer key in the Authorization header. Results as JSON (default), CSV, NDJSON or Arrow IPC stream
(`format` in the body, or the Accept header). Refusals carry the rule, the gateway's own
message and the audit id — never DuckDB's error text. Every request is audited, including
those refused before they reach the gateway: a body above `max_body_bytes` (413, its first
characters kept), a body the framework cannot validate (422/400), a wrong method (405) or path
(404) — all with the same `{"error": {rule, message, audit_id}}` body.

CSV, NDJSON and Arrow answers stream from DuckDB a record batch at a time (governance.http_answers);
a JSON answer, whose head carries the final cost, is read whole (at most the team's
`max_result_bytes`) and written a batch at a time. JSON carries no NaN/Infinity (they become
null), and a CSV of list, struct or map columns writes each such value as its JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from fastapi import FastAPI, Header, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.answer_notes import header_value
from governance.api_docs import BEARER, CATALOG_ERRORS, DESCRIPTION, QUERY_ERRORS, USAGE_ERRORS, error_responses, mount_docs
from governance.gateway import Gateway, Result
from governance.http_answers import ARROW_MEDIA, ENCODERS, NDJSON_MEDIA, StreamedAnswer, prefetch
from governance.rules import load_rules
from governance.sandbox import SandboxLimits
from governance.state import GovernanceState
from warehouse.catalog_url import CatalogUrl

MAX_BODY_BYTES = 1_000_000  # a SQL text of a megabyte is already far past any analyst's query
HTTP_RULES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 422: "invalid_request"}


class QueryBody(BaseModel):
    sql: str = Field(description="exactly one SELECT statement", examples=["SELECT category, sum(units) AS units FROM marts.neighbourhood_demand_daily GROUP BY 1"])
    format: str | None = Field(default=None, description="json (default), csv or arrow; or say it with the Accept header")


# the key is read from the header as sent; the bearer scheme (api_docs.BEARER) documents it
AUTHORIZATION = Header(default=None, include_in_schema=False)
QUERY_ANSWER = {200: {"description": "the rows, a record batch at a time", "content": {
    "application/json": {"example": {"columns_out": ["category", "units"], "rows": [["food", 1234.0]], "audit_id": "…", "data_date": "2026-03-01"}},
    "text/csv": {}, "application/vnd.apache.arrow.stream": {}}}}


def _key(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _json_default(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _finite(float(value))
    return str(value)


def _finite(value):
    """JSON has no NaN or Infinity (RFC 8259): they are sent as null; nested values too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _dumps(value) -> str:
    return json.dumps(_finite(value), default=_json_default, allow_nan=False)


def _json_rows(table: pa.Table, meta: dict) -> Iterator[bytes]:
    head = _dumps(meta | {"columns_out": table.column_names})
    yield (head[:-1] + ', "rows": [').encode()
    first = True
    for batch in table.to_batches():
        rows = [list(r.values()) for r in batch.to_pylist()]
        if rows:
            text = ", ".join(_dumps(r) for r in rows)
            yield ((", " if not first else "") + text).encode()
            first = False
    yield b"]}"


def _error(result: Result) -> JSONResponse:
    return JSONResponse(
        status_code=result.status,
        content={"error": {"rule": result.rule, "message": result.message, "audit_id": result.audit_id}},
        headers={"X-Audit-Id": result.audit_id},
    )


def _headers(result: Result) -> dict[str, str]:
    """The answer's headers; a stream still running when they go out has no final cost yet (its
    end says it: governance.http_answers)."""
    streamed = result.stream is not None and result.stream.end is None
    headers = {"X-Audit-Id": result.audit_id, "X-Cost-Estimate": f"{result.estimate:.6f}", "X-Streamed": str(streamed).lower(),
               "X-Snapshot": result.snapshot or "", "X-Snapshot-As-Of": result.as_of or "", "X-Data-Date": result.data_date or "",
               "X-Notes": header_value(result.notes)}
    if not streamed:
        headers |= {"X-Cost-Actual": f"{result.actual:.6f}", "X-Truncated": str(result.truncated).lower(),
                    "X-Suppressed-Groups": str(result.suppressed_groups)}
    return headers


def _meta(result: Result) -> dict:
    return {
        "audit_id": result.audit_id, "estimate": result.estimate, "actual": result.actual, "truncated": result.truncated,
        "suppressed_groups": result.suppressed_groups, "tables": result.tables, "columns": result.columns,
        "snapshot": result.snapshot, "snapshot_as_of": result.as_of, "data_date": result.data_date, "notes": result.notes,
    }


class BodyCap:
    """ASGI middleware: a request body above `limit` bytes is refused (413) before it is read
    whole — by its Content-Length, or once the bytes received pass the limit — and audited with
    its first characters."""

    def __init__(self, app, gateway: Gateway, limit: int):
        self.app, self.gateway, self.limit = app, gateway, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            prefix = b""
            while len(prefix) < 4096:  # a bounded prefix for the audit; the rest is never read
                message = await receive()
                prefix += message.get("body", b"")
                if not message.get("more_body"):
                    break
            return await self._refuse(scope, send, headers, int(declared), prefix)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(scope, send, headers, size, b"".join(chunks)[:4096] + chunk[:4096])
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, headers, size: int, prefix: bytes):
        import anyio.to_thread

        result = await anyio.to_thread.run_sync(
            lambda: self.gateway.reject(_key(headers.get("authorization")), "request_too_large",
                                        f"the request body ({size} bytes or more) is above the gateway's cap of {self.limit} bytes",
                                        prefix.decode("utf-8", "replace"), note=f"{scope.get('method')} {scope.get('path')}"))
        response = _error(result)
        await response(scope, _drain, send)


async def _drain():
    return {"type": "http.disconnect"}


def create_app(gateway: Gateway, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="civicflow query gateway", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    mount_docs(app)
    app.add_middleware(BodyCap, gateway=gateway, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()[:5]) or "the body"
        raw = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
        body = raw if isinstance(raw, str) or raw is None else json.dumps(raw, default=str)
        result = gateway.reject(_key(request.headers.get("authorization")), "invalid_request",
                                f"the request is not valid: expected a JSON body {{\"sql\": \"…\", \"format\": \"json|csv|arrow\"}} (check {where})",
                                body, note=f"{request.method} {request.url.path}")
        return _error(result)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException):
        rule = HTTP_RULES.get(exc.status_code, "bad_request")
        what = {"method_not_allowed": f"method {request.method} is not allowed on {request.url.path}",
                "not_found": f"no such endpoint {request.url.path} (POST /v1/query, POST /v1/estimate, GET /v1/usage)"}.get(rule, f"the request was refused ({exc.status_code})")
        result = gateway.reject(_key(request.headers.get("authorization")), rule, what, note=f"{request.method} {request.url.path}")
        response = _error(result)
        response.status_code = exc.status_code
        return response

    @app.post("/v1/query", summary="Run one SELECT", dependencies=[Security(BEARER)], responses={**QUERY_ANSWER, **error_responses(QUERY_ERRORS)})
    def query(body: QueryBody, request: Request, authorization: str | None = AUTHORIZATION):
        """Run one SELECT on your team's snapshot and stream the rows: JSON (default), CSV, NDJSON or
        an Arrow IPC stream (`format`, or `Accept: text/csv` / `application/x-ndjson` /
        `application/vnd.apache.arrow.stream`). A CSV, NDJSON or Arrow answer longer than 1 MB
        streams (`X-Streamed: true`): its cost and truncation come at its end, not in headers.
        Headers say what it cost (`X-Cost-Estimate`, `X-Cost-Actual`, units of 1 MB scanned), whether
        it was cut (`X-Truncated`) or groups dropped (`X-Suppressed-Groups`), which data it reflects
        (`X-Snapshot`, `X-Snapshot-As-Of`, `X-Data-Date`), notes such as relations published as merged
        cells (`X-Notes`), and its `X-Audit-Id`. Refused before running when the estimate passes the
        per-query cap or the budget left; a failed or stopped query is free."""
        accept = request.headers.get("accept", "")
        fmt = (body.format or "").lower() or ("arrow" if ARROW_MEDIA in accept else "csv" if "text/csv" in accept else "ndjson" if NDJSON_MEDIA in accept else "json")
        if fmt not in ENCODERS:  # JSON: one object whose head holds the cost, so the answer is whole (at most max_result_bytes)
            result = gateway.query(_key(authorization), body.sql)
            if result.outcome != "ok":
                return _error(result)
            return StreamingResponse(_json_rows(result.table, _meta(result)), media_type="application/json", headers=_headers(result))
        result = gateway.stream(_key(authorization), body.sql)
        if result.outcome != "ok" or result.stream is None:
            return _error(result)
        try:
            held = prefetch(result.stream)
            encoder = ENCODERS[fmt](result.stream.schema, _dumps)
        except BaseException:
            result.stream.close()
            raise
        return StreamedAnswer(result, encoder, held, _headers(result))

    @app.post("/v1/estimate", summary="Estimate a query's cost (dry run)", dependencies=[Security(BEARER)], responses=error_responses(QUERY_ERRORS))
    def estimate(body: QueryBody, authorization: str | None = AUTHORIZATION):
        """Plan and check the SELECT as `/v1/query` would, without running it: the estimate (an upper
        bound, 1 unit = 1 MB scanned), the relations and columns the plan reads, the snapshot and data
        date. Nothing is charged; the request is audited and counts against the team's concurrency."""
        result = gateway.query(_key(authorization), body.sql, dry_run=True)
        if result.outcome != "estimate":
            return _error(result)
        return _meta(result)

    @app.get("/v1/usage", summary="Your team's spend and what is left", dependencies=[Security(BEARER)], responses=error_responses(USAGE_ERRORS))
    def usage(authorization: str | None = AUTHORIZATION):
        """Your team's settled spend today and this month, its budgets and what is left of them
        (units of 1 MB scanned), with the audit id of this request."""
        result = gateway.usage(_key(authorization))  # audited, accepted or refused
        if result.outcome != "usage":
            return _error(result)
        return JSONResponse(result.usage | {"audit_id": result.audit_id}, headers={"X-Audit-Id": result.audit_id})

    @app.get("/v1/catalog", summary="What your team may query", dependencies=[Security(BEARER)], responses=error_responses(CATALOG_ERRORS))
    def catalog(authorization: str | None = AUTHORIZATION):
        """What your team may query: relations, columns, types, dbt descriptions, privacy
        classes and row counts, with the snapshot they come from, its publish time and its data
        date (the last day of data it holds)."""
        result = gateway.catalog(_key(authorization))  # audited, accepted or refused
        if result.outcome != "catalog":
            return _error(result)
        body = {"snapshot": result.snapshot, "snapshot_as_of": result.as_of, "data_date": result.data_date, "relations": result.catalog,
                "audit_id": result.audit_id}
        return JSONResponse(body, headers={"X-Audit-Id": result.audit_id, "X-Snapshot": result.snapshot or "", "X-Data-Date": result.data_date or ""})

    return app


def build_gateway(
    governance_db: Path, rules_dir: Path, published_dir: Path, manifest: Path, limits: SandboxLimits = SandboxLimits(),
    credentials: Sequence[CatalogUrl] = (),
) -> Gateway:
    """Load (and validate) the rules first: a malformed rule file stops the start."""
    rules = load_rules(rules_dir)
    return Gateway(GovernanceState(governance_db), rules, published_dir, manifest, limits, credentials)
