"""The granted columns' types as PostgreSQL's catalog names them, for catalog probes.

DuckDB's `pg_attribute.atttypid` holds DuckDB's own type ids (25 is its VARCHAR, 13 its
INTEGER), its `format_type` answers DuckDB names (`int4`, `varchar`) and its
`information_schema.columns.data_type` says `VARCHAR`, `DOUBLE`. Clients that read column types
from the catalog (SQLAlchemy's `get_columns`, PgJDBC's `getColumns`, Grafana, Npgsql) expect
PostgreSQL's OIDs and names, and find no type or a wrong one otherwise. The probe connection
knows exactly which columns it holds (the team's grant), so their PostgreSQL types are computed
once from the same Arrow → OID mapping the answers use, and served by two temporary macros:
`cf_column_types()` (a table) and `format_type(oid, typmod)`."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from governance.pgwire import types as pg

# PostgreSQL's own spelling (format_type and information_schema.columns.data_type) and pg_type.typname
PG_TYPES: dict[int, tuple[str, str]] = {
    pg.BOOL: ("boolean", "bool"), pg.BYTEA: ("bytea", "bytea"), pg.INT2: ("smallint", "int2"), pg.INT4: ("integer", "int4"),
    pg.INT8: ("bigint", "int8"), pg.FLOAT4: ("real", "float4"), pg.FLOAT8: ("double precision", "float8"),
    pg.NUMERIC: ("numeric", "numeric"), pg.VARCHAR: ("character varying", "varchar"), pg.TEXT: ("text", "text"),
    pg.JSON: ("json", "json"), pg.DATE: ("date", "date"), pg.TIME: ("time without time zone", "time"),
    pg.TIMESTAMP: ("timestamp without time zone", "timestamp"), pg.TIMESTAMPTZ: ("timestamp with time zone", "timestamptz"),
    pg.INTERVAL: ("interval", "interval"), pg.UUID: ("uuid", "uuid"),
}


@dataclass(frozen=True)
class ColumnType:
    schema: str
    relation: str
    column: str
    oid: int
    typmod: int  # PostgreSQL's: -1, or (precision << 16 | scale) + 4 for numeric
    data_type: str  # information_schema's name (no modifiers)
    udt_name: str


def column_type(schema: str, relation: str, column: str, arrow_type: pa.DataType) -> ColumnType:
    oid = pg.oid_of(arrow_type)[0]
    if oid == pg.TEXT:
        oid = pg.VARCHAR  # DuckDB's VARCHAR is PostgreSQL's varchar, the OID DuckDB's pg_type lists
    typmod = ((arrow_type.precision << 16) | arrow_type.scale) + 4 if pa.types.is_decimal(arrow_type) else -1
    name, udt = PG_TYPES.get(oid, ("text", "text"))
    return ColumnType(schema, relation, column, oid, typmod, name, udt)


def column_types(con: duckdb.DuckDBPyConnection, granted: dict[str, list[tuple[str, str]]]) -> list[ColumnType]:
    """Every granted column's PostgreSQL type, read from the (empty) tables the probe holds."""
    out = []
    for rel in granted:
        schema, name = rel.split(".", 1)
        arrow = con.execute(f'SELECT * FROM "{schema}"."{name}" LIMIT 0').fetch_arrow_table().schema
        out.extend(column_type(schema, name, f.name, f.type) for f in arrow)
    return out


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def install(con: duckdb.DuckDBPyConnection, granted: dict[str, list[tuple[str, str]]]) -> None:
    """Create `cf_column_types()` (attrelid, attname, schema, relation, typid, typmod, data_type,
    udt_name) and a PostgreSQL `format_type`: macros, so no probe lists them as relations."""
    rows = ", ".join(f"({_q(c.schema)}, {_q(c.relation)}, {_q(c.column)}, {c.oid}, {c.typmod}, {_q(c.data_type)}, {_q(c.udt_name)})"
                     for c in column_types(con, granted))
    values = (f"(VALUES {rows}) AS v(nspname, relname, attname, typid, typmod, data_type, udt_name)" if rows else
              "(SELECT NULL::VARCHAR AS nspname, NULL::VARCHAR AS relname, NULL::VARCHAR AS attname, NULL::BIGINT AS typid, "
              "NULL::INTEGER AS typmod, NULL::VARCHAR AS data_type, NULL::VARCHAR AS udt_name WHERE false) AS v")
    con.execute(
        "CREATE TEMP MACRO cf_column_types() AS TABLE SELECT c.oid AS attrelid, v.* FROM " + values +
        " JOIN pg_catalog.pg_namespace AS n ON n.nspname = v.nspname"
        " JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = v.relname")
    names = " ".join(f"WHEN {oid} THEN {_q(name)}" for oid, (name, _) in PG_TYPES.items() if oid != pg.NUMERIC)
    con.execute(
        "CREATE TEMP MACRO format_type(t, m) AS CASE"
        f" WHEN t = {pg.NUMERIC} AND m >= 4 THEN 'numeric(' || ((m - 4) >> 16) || ',' || ((m - 4) & 65535) || ')'"
        f" WHEN t = {pg.NUMERIC} THEN 'numeric' ELSE (CASE t {names} ELSE NULL END) END")
