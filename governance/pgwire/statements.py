"""What the Postgres endpoint answers itself: session statements (SET, SHOW, BEGIN, …), the
catalog probes BI tools send (run on a private in-memory DuckDB holding empty copies of the
granted relations only), and how a simple query splits into statements."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

from governance.catalog import Manifest
from governance.pgwire import codec, compat
from governance.pgwire.types import oid_of

SERVER_PARAMS = {
    "server_version": "16.0", "server_encoding": "UTF8", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
    "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on", "IntervalStyle": "postgres",
    "application_name": "", "is_superuser": "off", "default_transaction_read_only": "on", "in_hot_standby": "off",
}
SERVER_VERSION_NUM = "160000"
SHOW_EXTRA = {"transaction_isolation": "read committed", "transaction isolation level": "read committed",
              "search_path": "marts", "max_identifier_length": "63", "lc_collate": "C", "server_version_num": SERVER_VERSION_NUM}

SESSION_RE = re.compile(r"^\s*(SET|RESET|BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK\s+TO|ROLLBACK|ABORT|DISCARD|DEALLOCATE|CLOSE|LISTEN|UNLISTEN|SAVEPOINT|RELEASE)\b", re.I)
SHOW_RE = re.compile(r"^\s*SHOW\s+(.+?)\s*;?\s*$", re.I | re.S)
PROBE_RE = re.compile(r"\b(pg_catalog|information_schema|pg_[a-z_]+|version\s*\(|current_schema|current_database|current_user|session_user|txid_current"
                    r"|current_setting|quote_ident|has_[a-z_]+_privilege)\b", re.I)
FIXED_RE = re.compile(r"^\s*SELECT\s+((?:pg_catalog\.)?(?:version|current_schema)\s*\(\s*\))\s*;?\s*$", re.I)
VERSION = "PostgreSQL 16.0 (civicflow governed gateway on DuckDB)"
COMMAND_TAGS = {"SET": "SET", "RESET": "RESET", "BEGIN": "BEGIN", "START": "BEGIN", "COMMIT": "COMMIT", "END": "COMMIT", "ROLLBACK": "ROLLBACK",
         "ABORT": "ROLLBACK", "DISCARD": "DISCARD ALL", "DEALLOCATE": "DEALLOCATE", "CLOSE": "CLOSE CURSOR", "LISTEN": "LISTEN", "UNLISTEN": "UNLISTEN",
         "SAVEPOINT": "SAVEPOINT", "RELEASE": "RELEASE"}


def row_description(schema: pa.Schema, formats: list[int] | None = None) -> bytes:
    return codec.row_description([(f.name, *oid_of(f.type)) for f in schema], formats or ())


_SPLIT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|;", re.S)


def split_statements(sql: str) -> list[str]:
    """Statements of a simple query, split on semicolons outside strings and comments."""
    out, start = [], 0
    for m in _SPLIT.finditer(sql):
        if m.group(0) == ";":
            out.append(sql[start:m.start()])
            start = m.end()
    out.append(sql[start:])
    return [s.strip() for s in out if s.strip()]


def probe_connection(granted: dict[str, list[tuple[str, str]]], manifest: Manifest | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH ':memory:' AS {compat.DATABASE}")  # current_database() says civicflow
    con.execute(f"USE {compat.DATABASE}")
    for rel, cols in granted.items():
        schema, name = rel.split(".", 1)
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        body = ", ".join(f'"{c.replace(chr(34), "")}" {t}' for c, t in cols)
        con.execute(f'CREATE TABLE "{schema}"."{name}" ({body})')
    compat.prepare(con, granted, manifest)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con
