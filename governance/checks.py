"""`civicflow governance check`: rules validated against the published warehouse.

Errors: an allowed schema or table that does not exist, a table function DuckDB does not
know. Warnings: allowed columns without a privacy class (they count as identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from governance.catalog import Catalog, Manifest
from governance.rules import TeamRules
from warehouse.catalog_url import CatalogUrl
from warehouse.snapshots import open_snapshot


@dataclass(frozen=True)
class Finding:
    team: str
    level: str  # error | warning
    message: str


def check_rules(rules: dict[str, TeamRules], snapshot: Path, manifest: Manifest, credentials: Sequence[CatalogUrl] = ()) -> list[Finding]:
    con = open_snapshot(snapshot, credentials, config={"enable_external_access": False}).con  # a DuckDB file or the lake's version
    try:
        catalog = Catalog(con)
        functions = {r[0].lower() for r in con.execute("SELECT function_name FROM duckdb_functions() WHERE function_type = 'table'").fetchall()}
    finally:
        con.close()
    schemas = {name.split(".")[0] for name in catalog.relations}
    findings: list[Finding] = []
    for team, r in sorted(rules.items()):
        for s in r.schemas:
            if s not in schemas:
                findings.append(Finding(team, "error", f"allowed schema {s!r} does not exist in the warehouse ({r.source})"))
        for t in r.tables:
            if t not in catalog.relations:
                findings.append(Finding(team, "error", f"allowed table {t!r} does not exist in the warehouse ({r.source})"))
        for f in r.table_functions:
            if f not in functions:
                findings.append(Finding(team, "error", f"table function {f!r} is unknown to DuckDB ({r.source})"))
        for name, rel in sorted(catalog.relations.items()):
            if not r.allows_relation(name):
                continue
            missing = sorted(set(rel.columns) - set(manifest.privacy.get(name, {})))
            if missing:
                findings.append(Finding(team, "warning", f"{name}: {len(missing)} column(s) without meta.privacy count as identity: {', '.join(missing)}"))
    return findings
