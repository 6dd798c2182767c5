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
