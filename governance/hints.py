"""Hints for a query DuckDB could not plan, computed from the team's grant — never from
DuckDB's text, which can quote values. The error's class (and whether DuckDB's binder speaks
of GROUP BY) only picks which hint applies; the names suggested are the closest granted ones."""

from __future__ import annotations

import difflib

import duckdb
import sqlglot
from sqlglot import exp

GROUPING_HINT = ("a selected column is neither in GROUP BY nor inside an aggregate: add it to GROUP BY, "
                 "wrap it in an aggregate (sum, count, avg, …), or write GROUP BY ALL")


def _closest(name: str, candidates: set[str], cutoff: float = 0.75) -> list[str]:
    return difflib.get_close_matches(name.lower(), sorted(candidates), n=3, cutoff=cutoff)


def _did_you_mean(names: list[str]) -> str:
    return "; did you mean " + " or ".join(f"`{n}`" for n in names) + "?" if names else ""


def plan_hint(sql: str, error: duckdb.Error, granted: dict[str, list[tuple[str, str]]]) -> str:
    """What to tell an analyst whose query could not be planned."""
    kind = type(error).__name__
    grouping = isinstance(error, duckdb.BinderException) and "group by" in str(error).lower()
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return GROUPING_HINT if grouping else f"DuckDB could not plan the query ({kind}); check the SQL syntax"
    relations = set(granted)
    bare = {r.split(".", 1)[1]: r for r in relations}
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    named: list[str] = []
    for t in tree.find_all(exp.Table):
        name = (f"{t.db}.{t.name}" if t.db else t.name).lower()
        if not t.name or name in ctes:
            continue
        if name not in relations and name not in bare:
            return f"unknown table `{name}` (or not granted to your team){_did_you_mean(_closest(name, relations | set(bare), 0.85))}"
        named.append(name if name in relations else bare[name])
    columns = {c for rel in (named or relations) for c, _ in granted.get(rel, [])}
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    for col in tree.find_all(exp.Column):
        name = col.name.lower()
        if name and name not in columns and name not in aliases and not isinstance(col.this, exp.Star):
            return f"unknown column `{name}`{_did_you_mean(_closest(name, columns))}"
    if grouping:  # every name is known: the mistake is the grouping
        return GROUPING_HINT
    return f"DuckDB could not plan the query ({kind}); check table and column names"
