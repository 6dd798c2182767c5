"""A gateway refusal as a Postgres ErrorResponse: the SQLSTATE client libraries raise on,
with the rule and the audit id in the message (what an analyst quotes)."""

from __future__ import annotations

from governance.gateway import Result
from governance.pgwire import codec

POLICY_RULES = {"external_access", "operator_not_allowed", "table_function_not_allowed", "table_not_allowed", "identity_column",
                "quasi_aggregate_required", "quasi_value_aggregate", "unknown_team"}


def sqlstate(result: Result) -> str:
    rule = result.rule or ""
    if rule in POLICY_RULES:
        return "42501"
    if rule in ("per_query_cap", "daily_budget", "monthly_budget"):
        return "53400"
    if rule == "plan_failed":  # governance.hints says what was unknown, from the grant
        message = result.message or ""
        return "42P01" if message.startswith("unknown table") or "CatalogException" in message else "42803" if message.startswith("a selected column") else "42703"
    return {"concurrency": "53300", "timeout": "57014", "single_select": "0A000", "query_failed": "22000",
            "unauthenticated": "28000", "revoked_key": "28000", "no_snapshot": "57P03"}.get(rule, "XX000")


def refusal(result: Result) -> bytes:
    return codec.error_response(sqlstate(result), f"{result.message} (rule {result.rule}, audit {result.audit_id})")
