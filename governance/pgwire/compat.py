"""What BI tools send at connect that DuckDB's pg_catalog cannot answer as written.

Catalog probes run on the session's probe connection (empty copies of the granted relations).
DuckDB ships most of pg_catalog, but the queries of Metabase, DBeaver, Grafana, Power BI and
SQLAlchemy (Superset) also use functions and relations it lacks; `prepare` adds the functions
as temporary macros and `rewrite` replaces what a macro cannot stand for (regclass casts,
settings, the session user, relations with no DuckDB counterpart) before the probe runs. The
fixtures in tests/support/bi_probes.py are the queries these tools send."""

from __future__ import annotations

import re

import duckdb

from governance.catalog import Manifest, quote_ident, quote_relation
from governance.pgwire import catalog_types

DATABASE = "civicflow"

_MACROS = [
    # every granted relation may be read (the grant is what the probe holds) and nothing written
    "has_table_privilege(t, p) AS lower(p) IN ('select', 'references'), (u, t, p) AS lower(p) IN ('select', 'references')",
    "has_any_column_privilege(t, p) AS lower(p) IN ('select', 'references'), (u, t, p) AS lower(p) IN ('select', 'references')",
    "has_column_privilege(t, c, p) AS lower(p) IN ('select', 'references'), (u, t, c, p) AS lower(p) IN ('select', 'references')",
    "has_schema_privilege(s, p) AS lower(p) = 'usage', (u, s, p) AS lower(p) = 'usage'",
    "has_database_privilege(d, p) AS lower(p) IN ('connect', 'temp', 'temporary'), (u, d, p) AS lower(p) IN ('connect', 'temp', 'temporary')",
    "quote_ident(s) AS CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_$]*') THEN s ELSE '\"' || replace(s, '\"', '\"\"') || '\"' END",
    "parse_ident(s) AS list_transform(string_split(s, '.'), x -> trim(x, '\"'))",
    "array_lower(a, d) AS CASE WHEN len(a) > 0 THEN 1 END",
    "array_upper(a, d) AS CASE WHEN len(a) > 0 THEN len(a) END",
    "array_length(a, d) AS CASE WHEN len(a) > 0 THEN len(a) END",
    "pg_get_userbyid(o) AS 'civicflow'",
    "pg_encoding_to_char(e) AS 'UTF8'",
    "pg_backend_pid() AS 1",
    "pg_get_expr(e, r) AS NULL::VARCHAR, (e, r, pretty) AS NULL::VARCHAR",
    "pg_get_serial_sequence(t, c) AS NULL::VARCHAR",
    "pg_get_indexdef(i) AS NULL::VARCHAR, (i, c, pretty) AS NULL::VARCHAR",
    "pg_collation_is_visible(o) AS true",
    "current_schema() AS 'marts'",  # the first schema of search_path (SHOW search_path)
]

# Relations DuckDB lacks, as empty (or one-row) inline tables with PostgreSQL's columns.
_RELATIONS = {
    "pg_matviews": "SELECT NULL::VARCHAR AS schemaname, NULL::VARCHAR AS matviewname, NULL::VARCHAR AS matviewowner, NULL::VARCHAR AS definition WHERE false",
    "pg_stat_user_tables": "SELECT NULL::BIGINT AS relid, NULL::VARCHAR AS schemaname, NULL::VARCHAR AS relname, NULL::BIGINT AS n_live_tup WHERE false",
    "pg_extension": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS extname, NULL::VARCHAR AS extversion WHERE false",
    "pg_roles": "SELECT 10::BIGINT AS oid, {user} AS rolname, false AS rolsuper, false AS rolcreatedb, false AS rolcreaterole, true AS rolcanlogin",
    "pg_user": "SELECT 10::BIGINT AS usesysid, {user} AS usename, false AS usesuper, false AS usecreatedb",
    "pg_attrdef": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS adrelid, NULL::INTEGER AS adnum, NULL::VARCHAR AS adbin WHERE false",
    "pg_range": "SELECT NULL::BIGINT AS rngtypid, NULL::BIGINT AS rngsubtype, NULL::BIGINT AS rngmultitypid WHERE false",
    # DuckDB's pg_index and pg_collation lack columns SQLAlchemy names; a published copy has no index
    "pg_index": "SELECT NULL::BIGINT AS indexrelid, NULL::BIGINT AS indrelid, NULL::SMALLINT AS indnatts, NULL::SMALLINT AS indnkeyatts, "
                "NULL::BOOLEAN AS indisunique, NULL::BOOLEAN AS indnullsnotdistinct, NULL::BOOLEAN AS indisprimary, NULL::BOOLEAN AS indisexclusion, "
                "NULL::BOOLEAN AS indimmediate, NULL::BOOLEAN AS indisclustered, NULL::BOOLEAN AS indisvalid, NULL::BOOLEAN AS indisready, "
                "NULL::BOOLEAN AS indislive, NULL::BOOLEAN AS indisreplident, NULL::INTEGER[] AS indkey, NULL::BIGINT[] AS indcollation, "
                "NULL::BIGINT[] AS indclass, NULL::INTEGER[] AS indoption, NULL::VARCHAR AS indexprs, NULL::VARCHAR AS indpred WHERE false",
    "pg_opclass": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS opcmethod, NULL::VARCHAR AS opcname, NULL::BIGINT AS opcnamespace, "
                  "NULL::BOOLEAN AS opcdefault, NULL::BIGINT AS opcintype WHERE false",
    "pg_collation": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS collname, NULL::BIGINT AS collnamespace, NULL::VARCHAR AS collprovider, "
                    "NULL::VARCHAR AS collcollate, NULL::VARCHAR AS collctype WHERE false",
    # DuckDB lists its own system views in pg_views (main.duckdb_columns, …): the probe holds none of the grant
    "pg_views": "SELECT schema_name AS schemaname, view_name AS viewname, {user} AS viewowner, NULL::VARCHAR AS definition "
                "FROM duckdb_views() WHERE NOT internal",
    "pg_inherits": "SELECT NULL::BIGINT AS inhrelid, NULL::BIGINT AS inhparent, NULL::INTEGER AS inhseqno WHERE false",
    # comments with classoid 0: the rewrite turns `'pg_class'::regclass` into 0 (DuckDB's is the database's oid)
    "pg_description": "SELECT objoid, 0::BIGINT AS classoid, objsubid, description FROM pg_catalog.pg_description WHERE description IS NOT NULL",
    # the granted columns with PostgreSQL's type OIDs and typmods (governance.pgwire.catalog_types)
    "pg_attribute": "SELECT a.* REPLACE (coalesce(t.typid, a.atttypid) AS atttypid, coalesce(t.typmod, a.atttypmod) AS atttypmod) "
                    "FROM pg_catalog.pg_attribute AS a LEFT JOIN cf_column_types() AS t ON t.attrelid = a.attrelid AND t.attname = a.attname",
}
# information_schema.columns with PostgreSQL's type names (`character varying`, not `VARCHAR`)
_COLUMNS_BODY = ("SELECT c.* REPLACE (coalesce(t.data_type, c.data_type) AS data_type, coalesce(t.udt_name, c.udt_name) AS udt_name, "
                 "coalesce(CASE WHEN t.udt_name IS NOT NULL THEN 'pg_catalog' END, c.udt_schema) AS udt_schema) "
                 "FROM information_schema.columns AS c LEFT JOIN cf_column_types() AS t "
                 "ON t.nspname = c.table_schema AND t.relname = c.table_name AND t.attname = c.column_name")
_COLUMNS = re.compile(r'(?<![\w."])"?\binformation_schema"?\s*\.\s*"?columns\b"?(?!\s*\.)(\s+(?:AS\s+)?"?(\w+)"?)?', re.I)
_RELATION = re.compile(r'(?:"?pg_catalog"?\s*\.\s*)?"?\b(' + "|".join(_RELATIONS) + r')\b"?(?!\s*\.)(\s+(?:AS\s+)?"?(\w+)"?)?', re.I)
# pg_catalog.pg_x.col → pg_x.col: DuckDB does not bind three-part column names in correlated subqueries
_QUALIFIED_RELATION = re.compile(r'"?\bpg_catalog"?\s*\.\s*"?(pg_\w+)"?\s*\.(?=\s*"?\w)', re.I)
_KEYWORDS = {"on", "where", "join", "left", "right", "inner", "outer", "full", "cross", "natural", "union", "order", "group",
             "limit", "using", "having", "window", "except", "intersect", "and", "or", "lateral"}
_REGCLASS = re.compile(r"'[^']*'\s*::\s*(?:pg_catalog\.)?regclass\b|CAST\s*\(\s*'[^']*'\s+AS\s+REGCLASS\s*\)", re.I)
_REGTYPE = re.compile(r"::\s*(?:pg_catalog\.)?(regclass|regproc|regtype|regnamespace|regrole)\b|(?<=\sAS\s)(REGCLASS|REGPROC|REGTYPE|OID)(?=\s*\))", re.I)
_JSON_BUILD = re.compile(r"\bjson_build_object\s*\(", re.I)
_SETTING = re.compile(r"(?:pg_catalog\.)?current_setting\s*\(\s*'([^']+)'\s*(?:,\s*\w+\s*)?\)", re.I)
_USER = re.compile(r"(?<![\w.\"'$])(current_user|session_user|current_role|user)\b(?!\s*\()", re.I)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


_QUALIFIED_CALL = re.compile(r'"?\bpg_catalog"?\s*\.\s*"?(\w+)"?\s*\(', re.I)
_FROM_FUNCTION = re.compile(r"\b(generate_series|string_to_array)\s*\(", re.I)


def _functions_in_from(sql: str) -> str:
    """PostgreSQL lets a function stand in FROM with `AS x`, x naming the table and its one
    column (Grafana: `generate_series(...) as i, string_to_array(...) s`, then `s[i]`). DuckDB
    names the column after the function and takes no scalar function in FROM: spell it out."""
    out, pos = [], 0
    for m in _FROM_FUNCTION.finditer(sql):
        if m.start() < pos:
            continue
        before = sql[:m.start()].rstrip()
        if not (before.upper().endswith("FROM") or before.endswith(",")):
            continue
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                break
        alias = re.match(r"\s+(?:AS\s+)?(\w+)", sql[end + 1:], re.I)
        if alias is None or alias.group(1).lower() in _KEYWORDS:
            continue
        call, name = sql[m.start():end + 1], alias.group(1)
        out.append(sql[pos:m.start()])
        if m.group(1).lower() == "generate_series":
            out.append(f"{call} AS {name}_t({name})")
        else:
            out.append(f"(SELECT {call} AS {name}) AS {name}_t")
        pos = end + 1 + alias.end()
    out.append(sql[pos:])
    return "".join(out)


def _aliased(body: str, name: str, alias_clause: str | None, alias: str | None) -> str:
    if alias is not None and alias.lower() not in _KEYWORDS:
        return f"({body}){alias_clause}"  # the query's own alias
    return f"({body}) AS {name}{alias_clause or ''}"  # named as the relation, for `pg_range.col`


def _relation(m: re.Match, user: str) -> str:
    return _aliased(_RELATIONS[m.group(1).lower()].format(user=_quote(user)), m.group(1).lower(), m.group(2), m.group(3))


def prepare(con: duckdb.DuckDBPyConnection, granted: dict[str, list[tuple[str, str]]], manifest: Manifest | None = None) -> None:
    """Once the granted relations' empty copies exist: the macros, their columns' types, and
    dbt's descriptions as comments (pg_description: what Metabase, DBeaver and SQLAlchemy show)."""
    for macro in _MACROS:
        con.execute(f"CREATE TEMP MACRO {macro}")
    catalog_types.install(con, granted)
    if manifest is not None:
        for rel, cols in granted.items():
            target = quote_relation(rel)
            if manifest.descriptions.get(rel):
                con.execute(f"COMMENT ON TABLE {target} IS {_quote(manifest.descriptions[rel])}")
            for col, _ in cols:
                text = manifest.column_descriptions.get(rel, {}).get(col)
                if text:
                    con.execute(f"COMMENT ON COLUMN {target}.{quote_ident(col)} IS {_quote(text)}")


def rewrite(sql: str, user: str, settings: dict[str, str]) -> str:
    """The probe as DuckDB can run it (strings and quoted names inside are left alone except
    where a pattern needs a quoted literal, e.g. 'pg_class'::regclass)."""
    lower = {k.lower(): v for k, v in settings.items()}
    sql = _QUALIFIED_CALL.sub(r"\1(", sql)  # pg_catalog.f(…) → f(…): the macros above stand beside DuckDB's
    sql = _functions_in_from(sql)
    sql = _REGCLASS.sub("0", sql)  # the classoid pg_description holds here (below)
    sql = _REGTYPE.sub(lambda m: "::VARCHAR" if m.group(0).startswith("::") else ("BIGINT" if m.group(0).upper() == "OID" else "VARCHAR"), sql)
    sql = _JSON_BUILD.sub("json_object(", sql)
    sql = _QUALIFIED_RELATION.sub(lambda m: m.group(1) + ".", sql)
    sql = _SETTING.sub(lambda m: _quote(lower.get(m.group(1).lower(), "")), sql)
    sql = _RELATION.sub(lambda m: _relation(m, user), sql)
    sql = _COLUMNS.sub(lambda m: _aliased(_COLUMNS_BODY, "columns", m.group(1), m.group(2)), sql)
    return _USER.sub(_quote(user), sql)
