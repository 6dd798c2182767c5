"""DuckDB's own plan → the tables, columns and table functions a query reads.

`EXPLAIN (FORMAT json)` is taken after views, CTEs, `*`, `COLUMNS()`, `query()` and
`query_table()` have been expanded, so what it lists is what will be read. A scan lists its
projected columns and its pushed-down filters; a filter is an expression string, so the
table's column names found in it (as whole identifiers, over-reporting rather than missing)
count as read too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

# Leaves that read no stored data: constants, VALUES, CTE and delim references, empty results.
HARMLESS_LEAVES = {
    "DUMMY_SCAN", "COLUMN_DATA_SCAN", "EMPTY_RESULT", "CTE_SCAN", "DELIM_SCAN", "CHUNK_SCAN",
    "RECURSIVE_CTE_SCAN", "RECURSIVE_RECURRING_CTE_SCAN", "EXPRESSION_SCAN",
}
PASS_THROUGH = {"PROJECTION", "ORDER_BY", "TOP_N", "LIMIT", "STREAMING_LIMIT", "LIMIT_PERCENT", "FILTER", "RESULT_COLLECTOR"}
AGGREGATES = {"HASH_GROUP_BY", "PERFECT_HASH_GROUP_BY", "UNGROUPED_AGGREGATE", "SIMPLE_AGGREGATE"}

_IDENT = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)')
_FUNC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Scan:
    table: str  # schema.table (the catalog part dropped)
    columns: frozenset[str]  # projected and filtered
    estimated_rows: int
    projected: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FunctionScan:
    name: str
    estimated_rows: int


@dataclass
class Plan:
    scans: list[Scan] = field(default_factory=list)
    functions: list[FunctionScan] = field(default_factory=list)
    other_leaves: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    aggregate_functions: set[str] = field(default_factory=set)
    top_is_aggregate: bool = False
    unbounded_functions: list[str] = field(default_factory=list)  # arguments computed by a subquery: no row count

    @property
    def tables(self) -> list[str]:
        return sorted({s.table for s in self.scans})

    @property
    def columns(self) -> list[str]:
        return sorted({f"{s.table}.{c}" for s in self.scans for c in s.columns})


def _as_list(value) -> list[str]:
    if value is None or value == "":
        return []
    return [v for v in (value if isinstance(value, list) else [value]) if v != ""]


# DuckLake's scan (DUCKLAKE_SCAN) names its table without the schema ("Table": "big"), and a lake
# may hold the same name in two schemas (raw.hub_capacity, marts.hub_capacity). `explain()` puts
# the schema back from the query's logical plan (`json_serialize_plan`, whose DuckLake scans
# carry catalog, schema and table). Where a plan cannot say (a profile, or one query reading two
# tables of the same name), the relations of the snapshot being queried (passed in by the
# caller) resolve a name held by exactly one schema; otherwise it stays bare and matches no
# permission (refused).
LAKE_SCAN = "DUCKLAKE_SCAN"
# A table function whose arguments come from a subquery (or a lateral column) runs as an in-out
# operator over its argument rows: the plan names it under "Name", not "Function".
INOUT_FUNCTION = "INOUT_FUNCTION"


def strip_catalog(qualified: str, operator: str | None = None, relations: Collection[str] = ()) -> str:
    """`schema.table` of a scanned table; `relations`: the snapshot's `schema.table` names."""
    parts = qualified.split(".")
    if len(parts) == 1 and operator == LAKE_SCAN:
        owners = [r for r in relations if r.split(".", 1)[-1] == parts[0].lower()]
        if len(owners) == 1:
            return owners[0]
    return ".".join(parts[-2:]).lower()


def explain(con, sql: str) -> str:
    """`EXPLAIN (FORMAT json)` of `sql`, with every DuckLake scan's table schema-qualified."""
    return qualify_lake_scans(con, sql, con.execute("EXPLAIN (FORMAT json) " + sql).fetchall()[0][1])


def qualify_lake_scans(con, sql: str, plan_json: str) -> str:
    """Put the schema into the DuckLake scans of a plan or profile (JSON) of `sql`."""
    if LAKE_SCAN not in plan_json:
        return plan_json
    try:
        logical = json.loads(con.execute("SELECT json_serialize_plan(?)", [sql]).fetchone()[0])
    except Exception:  # no logical plan: the snapshot's relations decide (strip_catalog)
        return plan_json
    read: dict[str, set[str]] = {}
    stack = [logical]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            data = node.get("function_data")
            if node.get("name") == "ducklake_scan" and isinstance(data, dict) and data.get("table_name"):
                table = str(data["table_name"]).lower()
                read.setdefault(table, set()).add(f"{data.get('catalog_name')}.{data.get('schema_name')}.{table}")
            stack.extend(node.values())
    tree = json.loads(plan_json)
    for root in tree if isinstance(tree, list) else [tree]:
        for node in _nodes(root):
            info = node.get("extra_info") or {}
            if LAKE_SCAN in (node.get("name"), node.get("operator_name")) and "." not in str(info.get("Table", ".")):
                owners = read.get(str(info["Table"]).lower(), set())
                if len(owners) == 1:
                    info["Table"] = next(iter(owners))
    return json.dumps(tree)


def identifiers(expression: str) -> set[str]:
    return {(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)).lower() for m in _IDENT.finditer(expression)}


def _nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("children", []):
        yield from _nodes(child)


def scan_columns(info: dict, table_columns: set[str]) -> frozenset[str]:
    cols = {c.lower().strip('"') for c in _as_list(info.get("Projections"))}
    for expr in _as_list(info.get("Filters")):
        cols |= identifiers(expr) & table_columns
    return frozenset(cols)


def parse_plan(explain_json: str, columns_of: Callable[[str], set[str]], relations: Collection[str] = ()) -> Plan:
    """Read `EXPLAIN (FORMAT json)` output. `columns_of(table)` gives a table's column names;
    `relations` are the snapshot's `schema.table` names (see strip_catalog)."""
    roots = json.loads(explain_json)
    plan = Plan()
    for root in roots:
        for node in _nodes(root):
            name = node.get("name", "")
            info = node.get("extra_info") or {}
            plan.operators.append(name)
            for agg in _as_list(info.get("Aggregates")):
                plan.aggregate_functions |= {f.lower() for f in _FUNC.findall(agg)}
            if "Table" in info:
                table = strip_catalog(info["Table"], name, relations)
                projected = frozenset(c.lower().strip('"') for c in _as_list(info.get("Projections")))
                plan.scans.append(Scan(table, scan_columns(info, columns_of(table)), _int(info.get("Estimated Cardinality")), projected))
            elif "Function" in info:
                plan.functions.append(FunctionScan(str(info["Function"]).lower(), _int(info.get("Estimated Cardinality"))))
            elif name == INOUT_FUNCTION:  # range((SELECT …)), unnest((SELECT …)): named "Name", with the subquery as child
                fn = str(info.get("Name", "?")).lower()
                plan.functions.append(FunctionScan(fn, _int(info.get("Estimated Cardinality"))))
                plan.unbounded_functions.append(fn)
            elif not node.get("children"):
                plan.other_leaves.append(name)
        node = root
        while node.get("name") in PASS_THROUGH and len(node.get("children", [])) == 1:
            node = node["children"][0]
        plan.top_is_aggregate = node.get("name") in AGGREGATES
    return plan


def _int(value) -> int:
    try:
        return int(float(str(value).replace("~", "")))
    except (TypeError, ValueError):
        return 0
