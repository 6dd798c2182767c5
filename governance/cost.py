"""Cost like BigQuery: bytes scanned, in cost units (rules.COST_UNIT_BYTES bytes each).

The estimate is an upper bound taken from the plan before running: for each scan, the table's
full row count × the width of the columns the scan reads (projected or filtered). The actual is
taken from DuckDB's profiler after running: for each scan, the rows DuckDB reports it scanned
× the same widths. Rows scanned is a logical count (zone maps may skip row groups, a LIMIT may
stop early), so it is the same with a cold or warm cache and never above the table's rows.
Table functions cost their rows × 8 bytes (estimated cardinality before, produced rows after);
one whose arguments a subquery computes has no cardinality in the plan, so the gateway reserves
the team's per-query cap for it and charges what the profiler counted, at most that cap.
"""

from __future__ import annotations

import json

from governance.catalog import Catalog
from governance.plan import INOUT_FUNCTION, Plan, _as_list, scan_columns, strip_catalog
from governance.rules import COST_UNIT_BYTES

FUNCTION_ROW_BYTES = 8


def to_units(nbytes: float) -> float:
    return nbytes / COST_UNIT_BYTES


def estimate_bytes(plan: Plan, catalog: Catalog) -> int:
    total = 0
    for scan in plan.scans:
        rel = catalog.relations.get(scan.table)
        rows = max(rel.rows if rel else 0, scan.estimated_rows)
        total += rows * sum(catalog.width(scan.table, c) for c in scan.columns)
    for fn in plan.functions:
        total += fn.estimated_rows * FUNCTION_ROW_BYTES
    return total


def actual_bytes(profile_json: str, catalog: Catalog) -> int:
    """Bytes scanned according to DuckDB's profiler output for the last query."""
    total = 0
    stack = [json.loads(profile_json)]
    while stack:
        node = stack.pop()
        stack.extend(node.get("children", []))
        info = node.get("extra_info") or {}
        if "Table" in info:
            table = strip_catalog(info["Table"], node.get("operator_name"), catalog.relations.keys())
            rel = catalog.relations.get(table)
            cols = scan_columns(info, set(rel.columns) if rel else set())
            rows = int(node.get("operator_rows_scanned") or 0)
            if rel is not None:  # DuckLake's scan reports some rows more than once: never above the table's rows
                rows = min(rows, rel.rows)
            total += rows * sum(catalog.width(table, c) for c in cols)
        elif "Function" in info or node.get("operator_name") == INOUT_FUNCTION:
            total += int(node.get("operator_cardinality") or 0) * FUNCTION_ROW_BYTES
    return total


__all__ = ["estimate_bytes", "actual_bytes", "to_units", "_as_list"]
