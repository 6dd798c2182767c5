"""What one gateway request answered (`Result`), and the HTTP status of each rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from governance.stream import ResultStream

# HTTP status per rule (the server uses it; the CLI and client show rule + message).
STATUS = {
    "unauthenticated": 401, "revoked_key": 401, "unknown_team": 403,
    "single_select": 400, "plan_failed": 400, "external_access": 403,
    "operator_not_allowed": 403, "system_function": 403, "table_function_not_allowed": 403, "table_not_allowed": 403, "identity_column": 403,
    "quasi_aggregate_required": 403, "quasi_value_aggregate": 403,
    "per_query_cap": 402, "daily_budget": 402, "monthly_budget": 402, "concurrency": 429,
    "timeout": 504, "query_failed": 422, "no_snapshot": 503, "internal_error": 500,
    # requests the HTTP layer refuses before they reach the gateway (governance.server)
    "request_too_large": 413, "bad_request": 400, "invalid_request": 422, "method_not_allowed": 405, "not_found": 404,
}

@dataclass
class Result:
    audit_id: str
    outcome: str  # ok | estimate | refused | failed
    rule: str | None = None
    message: str | None = None
    table: pa.Table | None = None
    estimate: float | None = None
    actual: float | None = None
    truncated: bool = False
    suppressed_groups: int = 0
    tables: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: dict | None = None  # GET /v1/usage
    catalog: list[dict] | None = None  # GET /v1/catalog
    snapshot: str | None = None  # the published snapshot the answer was read from
    as_of: str | None = None  # when that snapshot was published (UTC)
    data_date: str | None = None  # the last day of data it holds (the as-of day of the run that published it)
    notes: list[str] = field(default_factory=list)  # what the analyst should know of the answer (merged cells)
    # An accepted query's rows, still coming from DuckDB (Gateway.stream); `actual`, `truncated`
    # and `suppressed_groups` are final once it has ended.
    stream: ResultStream | None = None

    @property
    def status(self) -> int:
        return 200 if self.outcome in ("ok", "estimate", "usage", "catalog") else STATUS.get(self.rule or "", 403)
