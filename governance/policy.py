"""The decision: may this team run this plan? Rules are named so a refusal can say which.

Everything here works on DuckDB's parse (statement types) and plan, never on a guess from the
SQL text. A `Refusal` carries only the gateway's own words: DuckDB's error text can contain
warehouse values, so it is never passed on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb

from governance.catalog import RANK, Catalog, Manifest, strictest
from governance.plan import AGGREGATES, HARMLESS_LEAVES, Plan, parse_plan
from governance.plan import explain as explain_json
from governance.rules import TeamRules

# Aggregates that hand back individual values rather than a count or a sum.
VALUE_AGGREGATES = {
    "list", "array_agg", "string_agg", "group_concat", "listagg", "histogram", "first", "last", "any_value",
    "arbitrary", "arg_min", "arg_max", "argmin", "argmax", "min_by", "max_by", "min", "max", "mode",
    "approx_top_k", "quantile", "quantile_disc", "quantile_cont", "median", "reservoir_quantile", "bitstring_agg",
}
GROUP_SIZE_COLUMN = "__cf_group_size"
# Functions that tell about the server rather than the data: settings (paths of the home, the
# lake's data path), session, catalog definitions. DuckDB folds them into constants while
# binding, so the plan cannot show them: they are found in DuckDB's own parse of the statement.
SYSTEM_FUNCTIONS = {
    "current_setting", "getvariable", "current_database", "current_catalog", "current_schema", "current_schemas",
    "current_query", "current_query_id", "current_connection_id", "current_transaction_id", "txid_current",
    "current_user", "current_role", "session_user", "user", "version", "in_search_path", "pg_get_viewdef",
    "pg_get_constraintdef", "pg_get_expr", "pg_conf_load_time", "pg_postmaster_start_time", "pg_my_temp_schema",
    "pg_has_role", "pg_sleep", "col_description", "obj_description", "shobj_description",
}
SYSTEM_PREFIXES = ("duckdb_", "pragma_", "has_")


class Refusal(Exception):
    def __init__(self, rule: str, message: str, *, tables: list[str] | None = None, columns: list[str] | None = None):
        self.rule, self.message = rule, message
        self.tables, self.columns = tables or [], columns or []
        super().__init__(f"{rule}: {message}")


@dataclass
class Permissions:
    """Base table → column → privacy class, for the relations one team may use."""

    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)  # base table -> group-size weight column
    # relations published as cells whose every row counts at least min_group_size people (checked
    # on the team's file, not assumed): reading their rows reads cells, never a person
    cells: set[str] = field(default_factory=set)


def permissions_for(rules: TeamRules, catalog: Catalog, manifest: Manifest, con: duckdb.DuckDBPyConnection) -> Permissions:
    perms = Permissions()
    columns_of = lambda t: set(catalog.relations[t].columns) if t in catalog.relations else set()  # noqa: E731

    def grant(table: str, column: str, cls: str) -> None:
        cols = perms.columns.setdefault(table, {})
        cols[column] = strictest(cols[column], cls) if column in cols else cls

    for name, rel in sorted(catalog.relations.items()):
        if not rules.allows_relation(name):
            continue
        classes = manifest.privacy.get(name, {})
        if name in manifest.group_weight:
            perms.weights[name] = manifest.group_weight[name]
        if rel.kind == "table":
            for col in rel.columns:
                grant(name, col, classes.get(col, "identity"))
            continue
        from governance.catalog import quote_ident, quote_relation

        for col in rel.columns:  # a view: follow each column to the base columns it reads
            explain = explain_json(con, f"SELECT {quote_ident(col)} FROM {quote_relation(name)}")
            for scan in parse_plan(explain, columns_of, catalog.relations.keys()).scans:
                for base_col in scan.projected:  # the view's own filters are handled below
                    grant(scan.table, base_col, classes.get(col, "identity"))
        explain = explain_json(con, f"SELECT count(*) FROM {quote_relation(name)}")
        for scan in parse_plan(explain, columns_of, catalog.relations.keys()).scans:
            for base_col in scan.columns:  # read only by the view's own filters: quasi unless exposed
                grant(scan.table, base_col, perms.columns.get(scan.table, {}).get(base_col, "quasi"))
    perms.cells = verified_cells(rules, catalog, perms.weights, con)
    return perms


def verified_cells(rules: TeamRules, catalog: Catalog, weights: dict[str, str], con: duckdb.DuckDBPyConnection) -> set[str]:
    """The relations of `weights` (published as cells) in which no row counts fewer than the
    team's `min_group_size` people, or none at all: a second look at what publication built."""
    from governance.catalog import quote_ident, quote_relation

    out = set()
    for table, weight in weights.items():
        rel = catalog.relations.get(table)
        if rel is None or rel.kind != "table" or weight not in rel.columns:
            continue
        w = quote_ident(weight)
        (small,) = con.execute(f"SELECT count(*) FROM {quote_relation(table)} WHERE {w} IS NULL OR {w} < ?", [rules.min_group_size]).fetchone()
        if small == 0:
            out.add(table)
    return out


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """Exactly one read-only SELECT, as DuckDB parses it. Returns that statement's text."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        raise Refusal("single_select", "the request could not be parsed as SQL") from None
    if len(statements) != 1:
        raise Refusal("single_select", f"exactly one SELECT statement per request (found {len(statements)})")
    stmt = statements[0]
    if stmt.type != duckdb.StatementType.SELECT:
        raise Refusal("single_select", f"only SELECT is allowed (this is a {stmt.type.name} statement)")
    return stmt.query


def function_names(con: duckdb.DuckDBPyConnection, sql: str, depth: int = 0) -> set[str]:
    """Every function DuckDB's parser finds in `sql`, including inside the SQL text handed to
    query() / query_table()."""
    (ast_json,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    names: set[str] = set()
    stack = [json.loads(ast_json)]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("class") == "FUNCTION" and isinstance(node.get("function_name"), str):
            name = node["function_name"].lower()
            names.add(name)
            if name in ("query", "query_table") and depth < 4:
                for child in node.get("children") or []:
                    value = (child.get("value") or {}) if isinstance(child, dict) else {}
                    if isinstance(value.get("value"), str):
                        names |= function_names(con, value["value"], depth + 1)
        stack.extend(node.values())
    return names


def check_functions(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Settings and system functions are refused, whatever they are nested in."""
    try:
        names = function_names(con, sql)
    except duckdb.Error:
        return  # not a plain SELECT (DESCRIBE, SHOW, …): planned or refused further on
    bad = sorted(n for n in names if n in SYSTEM_FUNCTIONS or n.startswith(SYSTEM_PREFIXES))
    if bad:
        raise Refusal("system_function", f"{', '.join(bad)}: settings and system functions are not available through the gateway")


@dataclass
class Decision:
    tables: list[str]
    columns: list[str]
    quasi_columns: list[str]
    needs_group_suppression: bool
    group_weight: str | None = None


def check_plan(plan: Plan, rules: TeamRules, perms: Permissions) -> Decision:
    tables, columns = plan.tables, plan.columns
    for leaf in plan.other_leaves:
        if leaf not in HARMLESS_LEAVES:
            raise Refusal("operator_not_allowed", f"the plan reads through a {leaf} operator, which the gateway does not allow", tables=tables, columns=columns)
    for fn in plan.functions:
        if fn.name not in rules.table_functions:
            raise Refusal(
                "table_function_not_allowed",
                f"table function {fn.name}() is not allowed for team {rules.team} (allowed: {', '.join(rules.table_functions) or 'none'})",
                tables=tables, columns=columns,
            )
    quasi: list[str] = []
    for scan in plan.scans:
        granted = perms.columns.get(scan.table)
        if granted is None:
            raise Refusal("table_not_allowed", f"table {scan.table} is not allowed for team {rules.team}", tables=tables, columns=columns)
        for col in sorted(scan.columns):
            cls = granted.get(col)
            if cls is None:
                raise Refusal("table_not_allowed", f"column {scan.table}.{col} is not exposed to team {rules.team}", tables=tables, columns=columns)
            if cls == "identity" and not rules.identity_clearance:
                raise Refusal(
                    "identity_column",
                    f"the plan reads identity column {scan.table}.{col} (selected, filtered, joined or grouped); team {rules.team} has no identity clearance",
                    tables=tables, columns=columns,
                )
            if cls == "quasi" or cls == "identity":  # identity here: cleared, and still only in aggregates
                quasi.append(f"{scan.table}.{col}")
    needs = bool(quasi) and rules.min_group_size > 1
    weight = None
    if needs and _reads_cells_rows(plan, {q.rsplit(".", 1)[0] for q in quasi}, perms):
        # each row is a published cell of at least min_group_size people: returned as it is, so a
        # LIMIT gets the rows it asks for (no group of the answer is smaller than a cell)
        return Decision(tables, columns, sorted(set(quasi)), False)
    if needs:
        if not plan.top_is_aggregate or "WINDOW" in plan.operators or "STREAMING_WINDOW" in plan.operators:
            raise Refusal(
                "quasi_aggregate_required",
                f"quasi-identifiers ({', '.join(sorted(set(quasi)))}) may only be used in a query whose result is an aggregate (GROUP BY / count / sum at the top level)",
                tables=tables, columns=columns,
            )
        bad = sorted(plan.aggregate_functions & VALUE_AGGREGATES)
        if bad:
            raise Refusal(
                "quasi_value_aggregate",
                f"aggregates that return individual values ({', '.join(bad)}) are not allowed in a query that reads quasi-identifiers",
                tables=tables, columns=columns,
            )
        quasi_tables = {q.rsplit(".", 1)[0] for q in quasi}
        weights = {perms.weights[t] for t in quasi_tables if t in perms.weights}
        weight = weights.pop() if len(weights) == 1 and len(quasi_tables) == 1 else None
    return Decision(tables, columns, sorted(set(quasi)), needs, weight)


def _reads_cells_rows(plan: Plan, quasi_tables: set[str], perms: Permissions) -> bool:
    """A plain read of rows (no aggregate, no window anywhere) whose quasi-identifiers all come
    from verified cells relations."""
    ops = set(plan.operators)
    return (quasi_tables <= perms.cells and not plan.aggregate_functions and not (ops & AGGREGATES)
            and not ops & {"WINDOW", "STREAMING_WINDOW"})


@dataclass(frozen=True)
class GroupSized:
    """The query with its group sizes as a last column, and the LIMIT/OFFSET taken off it to be
    applied after small groups are dropped (so `LIMIT 12` still answers 12 groups)."""

    sql: str
    limit: int | None = None
    offset: int = 0

    def window(self, n: int) -> tuple[int, int]:
        """(offset, length) of the rows to keep out of `n` kept groups."""
        return self.offset, n if self.limit is None else self.limit


def _constant_int(expr: dict | None) -> int | None:
    if not expr or expr.get("class") != "CONSTANT" or (expr.get("value") or {}).get("is_null"):
        return None
    value = expr["value"].get("value")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _lift_limit(node: dict) -> tuple[int | None, int]:
    """Remove a top-level `LIMIT n [OFFSET m]` of constants from the SELECT node; (n, m)."""
    for i, mod in enumerate(node.get("modifiers", [])):
        if mod.get("type") != "LIMIT_MODIFIER":
            continue
        limit, offset = _constant_int(mod.get("limit")), _constant_int(mod.get("offset")) if mod.get("offset") else 0
        if (mod.get("limit") and limit is None) or offset is None:
            return None, 0  # an expression: left in place, applied before suppression
        del node["modifiers"][i]
        return limit, offset
    return None, 0


def add_group_size(con: duckdb.DuckDBPyConnection, sql: str, weight: str | None) -> GroupSized:
    """Add `count(*)` (or `sum(weight)`) as a last column of the top-level SELECT, through
    DuckDB's own parser and deparser, so groups below the minimum can be suppressed."""
    (ast_json,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    ast = json.loads(ast_json)
    node = ast["statements"][0]["node"] if not ast.get("error") else None
    if node is None or node.get("type") != "SELECT_NODE":
        raise Refusal("quasi_aggregate_required", "a query that reads quasi-identifiers must be a single aggregate SELECT (no UNION at the top level)")
    measure = f"sum({weight})" if weight else "count(*)"
    (extra_json,) = con.execute("SELECT json_serialize_sql(?)", [f"SELECT {measure} AS {GROUP_SIZE_COLUMN}"]).fetchone()
    node["select_list"].append(json.loads(extra_json)["statements"][0]["node"]["select_list"][0])
    limit, offset = _lift_limit(node)
    (rewritten,) = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(ast)]).fetchone()
    return GroupSized(rewritten, limit, offset)


def privacy_rank(cls: str) -> int:
    return RANK[cls]
