"""The types of a prepared statement's parameters, as PostgreSQL would infer them.

asyncpg (and JDBC) encode each argument by the type the server reports in
ParameterDescription, so `WHERE demand_date >= $1` must say DATE, not TEXT. DuckDB does not
report the types of a statement's parameters (duckdb_prepared_statements() says UNKNOWN), so
they are read from the statement's shape: a cast (`$1::date`), a comparison, BETWEEN or IN
against a column of a granted relation, LIMIT/OFFSET. Anything else stays unknown (0), which
clients send as text and DuckDB casts where it is used."""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp

from governance.pgwire.types import INT8

_COMPARE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Is)


def _number(p: exp.Expression) -> int | None:
    lit = p.this if isinstance(p, exp.Parameter) else None
    try:
        return int(lit.this) if isinstance(lit, exp.Literal) else None
    except (TypeError, ValueError):
        return None


def parameter_types(sql: str, count: int, granted: dict[str, list[tuple[str, str]]], oid_of_type: Callable[[str], int]) -> list[int]:
    """One OID per parameter $1..$count (0 when the shape does not tell). `granted`: the team's
    relations → [(column, DuckDB type)]; `oid_of_type` maps a DuckDB type name to an OID."""
    out = [0] * count
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return out
    if tree is None:
        return out
    scanned = {f"{t.db}.{t.name}".lower() if t.db else t.name.lower() for t in tree.find_all(exp.Table)}
    columns: dict[str, set[str]] = {}
    for rel, cols in granted.items():
        if rel in scanned or rel.split(".", 1)[-1] in scanned:
            for col, typ in cols:
                columns.setdefault(col.lower(), set()).add(typ)

    def type_of_column(e: exp.Expression) -> str | None:
        if isinstance(e, exp.Column):
            types = columns.get(e.name.lower(), set())
            return next(iter(types)) if len(types) == 1 else None
        return None

    for p in tree.find_all(exp.Parameter):
        n = _number(p)
        if n is None or not 1 <= n <= count or out[n - 1]:
            continue
        parent = p.parent
        typ: str | None = None
        if isinstance(parent, exp.Cast):
            typ = parent.to.sql(dialect="duckdb")
        elif isinstance(parent, (exp.Limit, exp.Offset)):
            out[n - 1] = INT8
            continue
        elif isinstance(parent, _COMPARE):
            other = parent.expression if parent.this is p else parent.this
            typ = type_of_column(other)
        elif isinstance(parent, (exp.Between, exp.In)):
            typ = type_of_column(parent.this)
        if typ:
            try:
                out[n - 1] = oid_of_type(typ)
            except Exception:  # a type DuckDB cannot name: leave it unknown
                out[n - 1] = 0
    return out
