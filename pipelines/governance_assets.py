"""Dagster asset: the gateway's daily usage report (per team: queries, refusals, cost, budget left)."""


import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from governance.rules import load_rules
from governance.usage import audit_head, usage_report
from pipelines.home import PROJECT_ROOT, Home


class UsageReportConfig(dg.Config):
    day: str = ""  # YYYY-MM-DD; empty = yesterday (UTC). A daily partition key can be passed here.
    rules_dir: str = str(PROJECT_ROOT / "governance_rules")


def build_usage_asset(home: Home) -> dg.AssetsDefinition:
    @dg.asset(
        key=["governance", "usage_report_daily"],
        group_name="governance",
        owners=["team:data-governance"],
        description="Per analyst team and day: queries run, refused and failed, cost settled (1 unit = 1 MB scanned) and the daily budget left, from governance.duckdb. Written to exports/usage/usage-<day>.csv, with the audit chain's head at export time in usage-<day>.audit-head.json (an anchor `civicflow governance verify-audit` checks).",
    )
    def usage_report_daily(context: dg.AssetExecutionContext, config: UsageReportConfig) -> dg.MaterializeResult:
        day = date.fromisoformat(config.day) if config.day else datetime.now(UTC).date() - timedelta(days=1)
        frame = usage_report(home.governance_db, day, load_rules(config.rules_dir))
        out = home.exports / "usage" / f"usage-{day.isoformat()}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(out)
        head = audit_head(home.governance_db)
        (out.parent / f"usage-{day.isoformat()}.audit-head.json").write_text(json.dumps(head) + "\n")
        return dg.MaterializeResult(
            metadata={
                "day": day.isoformat(), "path": str(out), "teams": len(frame), "audit_seq": int(head["seq"]),
                "queries": int(frame["queries"].sum()), "refused": int(frame["refused"].sum()), "cost": float(frame["cost"].sum()),
                "preview": dg.MetadataValue.md(frame.to_pandas().to_markdown(index=False) if len(frame) else "(no teams)"),
            }
        )

    return usage_report_daily
