"""The gateway's OpenAPI document and its `/docs` page, served with no request leaving the host.

FastAPI's default `/docs` loads Swagger UI's script, stylesheet and favicon from a CDN, so it is
blank offline. Here the page is FastAPI's own (`get_swagger_ui_html`) pointed at the copy of
Swagger UI that the `swagger-ui-bundle-v2` wheel ships, mounted under `/docs/assets`; the online
validator badge (an image from validator.swagger.io) is turned off and ReDoc (another CDN) is not
served. The document declares the bearer scheme every endpoint uses and every error it answers,
each with the one error body the gateway sends."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
DESCRIPTION = """\
Governed SQL on the warehouse snapshot published for your team. Every request is authenticated
with your key (`Authorization: Bearer cfk_…`), planned, checked against your team's rules,
costed, run read-only under your team's timeout, billed and written to the audit chain.

Every refusal has the same body, `{"error": {"rule", "message", "audit_id"}}`: the rule names
why (see docs/analysts.md, "The rules you may meet"); quote the audit id when you ask the data
team. Every answer says which data it reflects: the snapshot, its publish time and its data date
(the last day of data it holds).

Besides the errors each endpoint lists, any path answers `404` (`not_found`: no such endpoint)
and `405` (`method_not_allowed`) with the same error body; every request, refused or not, is a
row in the audit chain.
"""

BEARER = HTTPBearer(
    auto_error=False, scheme_name="apiKey", bearerFormat="cfk_…",
    description="Your personal key (`civicflow keys create --team <team> --name <you>`), as `Authorization: Bearer cfk_…`.",
)


class ErrorDetail(BaseModel):
    rule: str | None = Field(description="why: the rule refused (see docs/analysts.md), e.g. `table_not_allowed`, `daily_budget`")
    message: str | None = Field(description="the gateway's own explanation (never DuckDB's text, which can quote data)")
    audit_id: str | None = Field(description="the audit row of this request: quote it when asking the data team")


class ErrorBody(BaseModel):
    """Every refusal and failure, whatever the status."""

    error: ErrorDetail


ERRORS = {
    400: "not one SELECT (`single_select`), or a query DuckDB cannot plan (`plan_failed`, with a hint naming the closest granted names)",
    401: "missing, unknown (`unauthenticated`) or revoked (`revoked_key`) key",
    402: "the estimate is above the per-query cap or what is left of the team's budget (`per_query_cap`, `daily_budget`, `monthly_budget`)",
    403: "policy: a relation, column, function or file the team is not granted (`table_not_allowed`, `identity_column`, `external_access`, …)",
    404: "no such endpoint (`not_found`)",
    405: "the method is not allowed on this path (`method_not_allowed`)",
    413: "the request body is above 1 MB (`request_too_large`)",
    422: "the request is not valid (`invalid_request`; a query: not a JSON body with a string `sql`), or DuckDB could not run the query (`query_failed`)",
    429: "the team already has its `limits.concurrency` requests planning or running (`concurrency`)",
    500: "the gateway failed (`internal_error`); nothing was charged",
    503: "nothing is published for the team yet (`no_snapshot`)",
    504: "stopped at the team's timeout, planning included (`timeout`); nothing was charged",
}
ANY_REQUEST = (401, 403, 413, 422, 500)  # a key, its team's rules, the body cap, validation, a failure: on every endpoint
QUERY_ERRORS = (*ANY_REQUEST, 400, 402, 429, 503, 504)
CATALOG_ERRORS = (*ANY_REQUEST, 503)
USAGE_ERRORS = ANY_REQUEST


def error_responses(codes: tuple[int, ...]) -> dict[int | str, dict]:
    """FastAPI's `responses=` for these statuses, all with the error body."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in sorted(set(codes))}


def mount_docs(app: FastAPI) -> None:
    """`/docs` from local assets (create the app with docs_url=None and redoc_url=None)."""
    import swagger_ui_bundle

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png", swagger_ui_parameters={"validatorUrl": None},
        )
