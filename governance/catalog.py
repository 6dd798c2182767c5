"""What the gateway knows about a snapshot: relations, columns, widths, privacy classes.

Privacy classes come from the dbt manifest (`meta.privacy` on model columns, one source of
truth). A column without a class counts as identity (deny by default).

DuckDB's plan shows the *base* tables a query scans, after views are expanded. So the privacy
of a base column read through a view is derived from the view's own classes: for each view
column, `EXPLAIN SELECT col FROM view` lists the base columns it reads, and each base column
takes the strictest class of the view columns that read it. A column a view only filters on
(and no view column exposes) counts as quasi: usable only inside aggregates of big enough
groups, since the plan cannot tell a query through the view from one on its base table.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

CLASSES = ("public", "quasi", "identity")
RANK = {c: i for i, c in enumerate(CLASSES)}

_FIXED_WIDTH = {
    "BOOLEAN": 1, "TINYINT": 1, "UTINYINT": 1, "SMALLINT": 2, "USMALLINT": 2, "INTEGER": 4, "UINTEGER": 4,
    "FLOAT": 4, "DATE": 4, "BIGINT": 8, "UBIGINT": 8, "DOUBLE": 8, "TIMESTAMP": 8, "TIME": 8,
    "TIMESTAMP WITH TIME ZONE": 8, "TIMESTAMP_NS": 8, "TIMESTAMP_MS": 8, "TIMESTAMP_S": 8,
    "HUGEINT": 16, "UHUGEINT": 16, "UUID": 16, "INTERVAL": 16,
}
NESTED_WIDTH = 64  # lists, structs, maps: a flat upper-bound guess per value
VARCHAR_SAMPLE_ROWS = 4096


def strictest(a: str, b: str) -> str:
    return a if RANK[a] >= RANK[b] else b


@dataclass(frozen=True)
class Manifest:
    """Privacy classes per `schema.relation` → column, and optional group-size weight columns."""

    privacy: dict[str, dict[str, str]]
    group_weight: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)  # relation → dbt description
    column_descriptions: dict[str, dict[str, str]] = field(default_factory=dict)  # relation → column → description


def load_manifest(manifest_path: Path) -> Manifest:
    data = json.loads(Path(manifest_path).read_text())
    privacy: dict[str, dict[str, str]] = {}
    weights: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    column_descriptions: dict[str, dict[str, str]] = {}
    for node in data.get("nodes", {}).values():
        if node.get("resource_type") not in ("model", "seed", "snapshot"):
            continue
        rel = f"{node['schema']}.{node.get('alias') or node['name']}".lower()
        cols: dict[str, str] = {}
        for name, col in (node.get("columns") or {}).items():
            cls = (col.get("meta") or {}).get("privacy") or ((col.get("config") or {}).get("meta") or {}).get("privacy")
            if cls in RANK:
                cols[name.lower()] = cls
            if col.get("description"):
                column_descriptions.setdefault(rel, {})[name.lower()] = col["description"]
        privacy[rel] = cols
        if node.get("description"):
            descriptions[rel] = node["description"]
        meta = (node.get("meta") or {}) | ((node.get("config") or {}).get("meta") or {})
        if meta.get("privacy_group_weight"):
            weights[rel] = str(meta["privacy_group_weight"]).lower()
    return Manifest(privacy=privacy, group_weight=weights, descriptions=descriptions, column_descriptions=column_descriptions)


@dataclass
class Relation:
    name: str  # schema.table
    kind: str  # table | view
    columns: dict[str, str]  # column -> DuckDB type
    rows: int = 0


class Catalog:
    """Relations of one snapshot (opened read-only), their row counts and column widths."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self._lock = threading.Lock()
        self._widths: dict[tuple[str, str], int] = {}
        self.relations: dict[str, Relation] = {}
        for schema, table, kind in con.execute(
            "SELECT schema_name, table_name, 'table' FROM duckdb_tables() WHERE NOT internal AND NOT temporary "
            "UNION ALL SELECT schema_name, view_name, 'view' FROM duckdb_views() WHERE NOT internal AND NOT temporary"
        ).fetchall():
            self.relations[f"{schema}.{table}".lower()] = Relation(f"{schema}.{table}".lower(), kind, {})
        for schema, table, col, dtype in con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal ORDER BY column_index"
        ).fetchall():
            rel = self.relations.get(f"{schema}.{table}".lower())
            if rel is not None:
                rel.columns[col.lower()] = dtype
        for rel in self.relations.values():
            if rel.kind == "table":
                rel.rows = con.execute(f"SELECT count(*) FROM {quote_relation(rel.name)}").fetchone()[0]

    def width(self, table: str, column: str) -> int:
        """Bytes per value, the same number for the estimate and the settlement."""
        key = (table, column)
        if key in self._widths:
            return self._widths[key]
        rel = self.relations.get(table)
        dtype = (rel.columns.get(column) if rel else None) or "VARCHAR"
        base = dtype.split("(")[0].upper()
        if base in _FIXED_WIDTH:
            width = _FIXED_WIDTH[base]
        elif base == "DECIMAL":
            width = 16
        elif base in ("VARCHAR", "BLOB", "BIT") and rel is not None and rel.kind == "table" and column in rel.columns:
            with self._lock:
                avg = self._con.execute(
                    f"SELECT avg(octet_length(CAST({quote_ident(column)} AS BLOB))) FROM {quote_relation(table)} "
                    f"USING SAMPLE {VARCHAR_SAMPLE_ROWS} ROWS (reservoir, 7)"
                ).fetchone()[0]
            width = 2 + int(round(avg or 0))  # BigQuery-like: 2 bytes + the bytes of the value
        else:
            width = NESTED_WIDTH
        self._widths[key] = width
        return width


def describe_grant(granted: dict[str, list[tuple[str, str]]], catalog: Catalog, manifest: Manifest) -> list[dict]:
    """What a team may query, for GET /v1/catalog and `civicflow catalog`: each granted relation
    with its kind, row count (tables; a view's is not known without running it), dbt
    description, and its columns with type, privacy class and description."""
    out = []
    for rel in sorted(granted):
        info = catalog.relations.get(rel)
        privacy, described = manifest.privacy.get(rel, {}), manifest.column_descriptions.get(rel, {})
        out.append({
            "name": rel, "kind": info.kind if info else "table", "rows": info.rows if info and info.kind == "table" else None,
            "description": manifest.descriptions.get(rel),
            "columns": [{"name": c, "type": t, "privacy": privacy.get(c, "identity"), "description": described.get(c)} for c, t in granted[rel]],
        })
    return out


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_relation(qualified: str) -> str:
    return ".".join(quote_ident(p) for p in qualified.split(".", 1))
