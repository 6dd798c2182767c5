"""Catalog questions every stage asks of an open warehouse connection."""

from __future__ import annotations

import duckdb


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether `schema.table` (a table or a view) exists in the connection's default catalog."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def tables_in(con: duckdb.DuckDBPyConnection, schema: str, base_tables_only: bool = False) -> list[str]:
    """The tables (and views, unless `base_tables_only`) of one schema of the default catalog, by name."""
    kinds = "AND table_type = 'BASE TABLE'" if base_tables_only else ""
    return [r[0] for r in con.execute(
        f"SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() AND table_schema = ? {kinds} ORDER BY 1",
        [schema],
    ).fetchall()]


def user_table_count(con: duckdb.DuckDBPyConnection) -> int:
    """Tables and views in the connection's default catalog, system schemas left out."""
    return int(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema NOT IN ('information_schema', 'pg_catalog')"
        ).fetchone()[0]
    )


def quote_literal(value: object) -> str:
    """A SQL string literal (for statements DuckDB cannot take parameters in: LOAD, ATTACH, SET)."""
    return "'" + str(value).replace("'", "''") + "'"
