"""What a team may query, built for it when a snapshot is published (privacy by construction).

For every team in governance_rules/, publishing writes `<snapshot>.teams/<team>.duckdb` (read
only) and `<team>.json` (the privacy classes of what it holds). The gateway runs a team's SQL on
that file alone, so whatever the SQL says, it reads data that holds nothing the team may not see:

* A relation whose columns are all `public` (and that declares no privacy unit) is copied as is.
* A relation that describes people declares how to count them in its dbt `meta`:
  `privacy_group_weight: <column>` (an aggregated mart: the column holds the people per row) or
  `privacy_unit: <column>` (rows about individuals: distinct values of the column are people),
  and `privacy_cells: [d1, d2, …]`, the dimensions of its cells, coarsest first. It is published
  as *cells*: one row per combination of the dimensions the team may see (identity dimensions
  only with `identity_clearance`), each describing at least `min_group_size` people:
  - top-down over d1, d2, …: inside each published parent cell, children smaller than the
    minimum are merged into a remainder whose dimension is NULL ("other"); a remainder still
    too small takes its smallest sibling along (complementary merging), so every published cell
    is big enough *and* every parent is exactly the sum of its published children — no total,
    marginal or difference of two answers isolates a merged cell;
  - a population smaller than the minimum is not published at all (suppressed);
  - integer measures are summed over the merged rows, other measures (medians, rates) kept
    only where a cell is one source row and NULL where rows were merged (they cannot be
    recomputed); a `privacy_unit` relation becomes its cells plus `holders` (distinct people).
  No team, cleared or not, receives rows about individuals: clearance adds identity
  dimensions to cells, never rows.
* Any other relation (a non-public column and no declared unit) is not published to the team
  (deny by default); `<team>.json` says why under `omitted`.

Two relations published to one team that count the same people must have cell dimensions that
nest (one list a prefix of the other) and agree on the counts they share; otherwise a finer
relation's remainder could be differenced against a coarser one's cell, and publishing stops
with `PublicationError`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from governance.catalog import Manifest, load_manifest, quote_ident, quote_relation
from governance.plan import identifiers
from governance.rules import TeamRules
from warehouse.snapshots import open_snapshot, team_snapshot, teams_dir

HOLDERS = "holders"  # distinct people in a cell of a `privacy_unit` relation
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
Key = tuple


class PublicationError(RuntimeError):
    """A team's relations could not be built privacy-safe; the snapshot is not published."""


# -- the cells: pure functions on {key: people}


def merge_cells(cells: Mapping[Key, int], k: int) -> dict[Key, Key | None]:
    """Map every cell key (d1, …, dn) to the key it is published under (merged dimensions None),
    or to None when the whole population is below `k` (suppressed). Every published key gathers
    at least `k` people and every published parent is the exact sum of its published children."""
    total = sum(cells.values())
    if total < k or total == 0:
        return {key: None for key in cells}
    width = len(next(iter(cells))) if cells else 0
    published: dict[Key, Key] = {key: () for key in cells}
    for level in range(width):
        children: dict[Key, dict[object, int]] = defaultdict(lambda: defaultdict(int))
        for key, prefix in published.items():
            children[prefix][key[level]] += cells[key]
        merged: dict[Key, set] = {}
        for parent, kids in children.items():
            small = {v for v, n in kids.items() if n < k or v is None}  # a genuine NULL joins the remainder
            remainder = sum(kids[v] for v in small)
            if 0 < remainder < k:
                rest = sorted((n, str(v)) for v, n in kids.items() if v not in small)
                if rest:
                    smallest = rest[0][1]
                    small.add(next(v for v in kids if v not in small and str(v) == smallest))
            merged[parent] = small
        published = {key: prefix + (None if key[level] in merged[prefix] else key[level],) for key, prefix in published.items()}
    return dict(published)


def published_counts(cells: Mapping[Key, int], mapping: Mapping[Key, Key | None]) -> dict[Key, int]:
    out: dict[Key, int] = defaultdict(int)
    for key, n in cells.items():
        if mapping[key] is not None:
            out[mapping[key]] += n
    return dict(out)


# -- one team


@dataclass
class Built:
    """What one team's file holds: relation -> column -> class, group weights, what was left out."""

    privacy: dict[str, dict[str, str]] = field(default_factory=dict)
    group_weight: dict[str, str] = field(default_factory=dict)
    omitted: dict[str, str] = field(default_factory=dict)
    withheld: dict[str, dict[str, str]] = field(default_factory=dict)  # relation -> column left out -> its class
    not_granted: list[str] = field(default_factory=list)
    cells: dict[str, dict] = field(default_factory=dict)  # relation -> dimensions, cells published, merged, suppressed
    data_date: date | None = None  # the last day of data the snapshot holds (the publishing run's as-of day)

    def to_json(self) -> str:
        return json.dumps(
            {"privacy": self.privacy, "group_weight": self.group_weight, "omitted": self.omitted, "withheld": self.withheld,
             "not_granted": self.not_granted, "cells": self.cells, "data_date": self.data_date and self.data_date.isoformat()},
            indent=2, default=str)


@dataclass(frozen=True)
class TeamPublication:
    """A team's `<team>.json`: the classes of what its file holds (the gateway's second-line
    checks read them) and what was left out (for the refusal messages only)."""

    manifest: Manifest
    omitted: dict[str, str]
    withheld: dict[str, dict[str, str]]
    not_granted: tuple[str, ...]
    cells: Mapping[str, dict] = field(default_factory=dict)  # relation -> dimensions, published and merged cells
    data_date: str | None = None  # ISO day; None for a snapshot published without one

    def why_not(self, sql: str, rules: TeamRules):
        """The refusal to give for a query DuckDB could not plan because it names something not
        published to the team (the decision is already taken: it is not in the team's file)."""
        from governance.policy import Refusal

        ids = identifiers(sql)
        for rel, cols in sorted(self.withheld.items()):
            for col, cls in sorted(cols.items(), key=lambda c: c[1] != "identity"):
                if col in ids and rel.split(".", 1)[1] in ids:
                    if cls == "identity" and not rules.identity_clearance:
                        return Refusal("identity_column", f"{rel}.{col} is an identity column; team {rules.team} has no identity clearance, so it is not published to it", columns=[f"{rel}.{col}"])
                    return Refusal("table_not_allowed", f"{rel}.{col} is not published to team {rules.team}: {rel} is published as cells of at least {rules.min_group_size} people (see docs/analysts.md)", columns=[f"{rel}.{col}"])
        for rel in sorted(set(self.not_granted) | set(self.omitted)):
            schema, name = rel.split(".", 1)
            if schema in ids and name in ids:
                why = self.omitted.get(rel, "its schema/table is not in the team's allow list")
                return Refusal("table_not_allowed", f"table {rel} is not allowed for team {rules.team} ({why})", tables=[rel])
        return None


def read_team_publication(team_file: Path) -> TeamPublication:
    data = json.loads(Path(team_file).with_suffix(".json").read_text())
    return TeamPublication(Manifest(privacy=data["privacy"], group_weight=data["group_weight"]), data.get("omitted", {}),
                           data.get("withheld", {}), tuple(data.get("not_granted", ())), data.get("cells", {}), data.get("data_date"))


def data_date_of(snapshot: Path | None) -> date | None:
    """The data date a published snapshot's team files record (None when there is none)."""
    if snapshot is None:
        return None
    for team_json in sorted(teams_dir(Path(snapshot)).glob("*.json")):
        found = json.loads(team_json.read_text()).get("data_date")
        if found:
            return date.fromisoformat(found)
    return None


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    schema, name = relation.split(".", 1)
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND lower(schema_name) = ? AND lower(table_name) = ? ORDER BY column_index", [schema, name]).fetchall()
    return {c.lower(): t for c, t in rows}


def _relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal "
        "UNION SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal").fetchall()
    return sorted({f"{s}.{t}".lower() for s, t in rows})


def _visible(cls: str, rules: TeamRules) -> bool:
    return cls != "identity" or rules.identity_clearance


def build_team(con: duckdb.DuckDBPyConnection, rules: TeamRules, manifest: Manifest, specs: Mapping[str, CellSpec], out: Path) -> Built:
    """Write `out` (a new DuckDB file) with the relations `rules.team` may query, read through
    `con` (the snapshot, its default catalog). Returns what was written."""
    built = Built()
    alias = "cf_team_out"
    con.execute(f"ATTACH {_literal(out)} AS {alias} (READ_WRITE)")
    try:
        families: list[tuple[str, list[str], dict[Key, int], dict[Key, Key | None]]] = []
        for rel in _relations(con):
            if not rules.allows_relation(rel):
                built.not_granted.append(rel)
                continue
            columns = _columns(con, rel)
            classes = {c: manifest.privacy.get(rel, {}).get(c, "identity") for c in columns}
            meta = specs.get(rel)
            schema = rel.split(".", 1)[0]
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {alias}.{quote_ident(schema)}")
            target = f"{alias}.{quote_relation(rel)}"
            if meta is None:
                if all(cls == "public" for cls in classes.values()):
                    con.execute(f"CREATE TABLE {target} AS SELECT * FROM {quote_relation(rel)}")
                    built.privacy[rel] = dict(classes)
                else:
                    hidden = sorted(c for c, cls in classes.items() if cls != "public")
                    built.withheld[rel] = dict(classes)
                    built.omitted[rel] = f"columns {', '.join(hidden)} are not public and the model declares no privacy unit (meta.privacy_unit or privacy_group_weight with privacy_cells)"
                continue
            dims = [d for d in meta.dims if d in classes and _visible(classes[d], rules)]
            cells, mapping = _write_cells(con, rel, target, columns, classes, dims, meta, rules)
            families.append((rel, dims, cells, mapping))
            built.privacy[rel] = {d: classes[d] for d in dims}
            if meta.weight:
                built.privacy[rel] |= {m: "public" for m in _measures(columns, classes, dims, meta)}
                built.group_weight[rel] = meta.weight
            else:
                built.privacy[rel][HOLDERS] = "public"
                built.group_weight[rel] = HOLDERS
            built.withheld[rel] = {c: cls for c, cls in classes.items() if c not in built.privacy[rel]}
            counts = published_counts(cells, mapping)
            built.cells[rel] = {
                "dimensions": dims, "source_cells": len(cells), "published_cells": len(counts),
                "merged_cells": sum(1 for key, pub in mapping.items() if pub is not None and pub != key),
                "suppressed_people": sum(n for key, n in cells.items() if mapping[key] is None),
            }
        _check_families(rules.team, families)
    finally:
        con.execute(f"DETACH {alias}")
    return built


def _measures(columns: Mapping[str, str], classes: Mapping[str, str], dims: list[str], meta: CellSpec) -> list[str]:
    """The columns a weighted relation publishes besides its dimensions: public ones only."""
    return [c for c in columns if c not in dims and c not in meta.dims and classes[c] == "public"]


def _write_cells(con, rel: str, target: str, columns: Mapping[str, str], classes: Mapping[str, str], dims: list[str],
                 meta: CellSpec, rules: TeamRules) -> tuple[dict[Key, int], dict[Key, Key | None]]:
    source = quote_relation(rel)
    dim_sql = [quote_ident(d) for d in dims]
    if meta.weight:
        if meta.weight not in columns:
            raise PublicationError(f"{rel}: meta.privacy_group_weight names {meta.weight!r}, which is not a column")
        people = f"sum({quote_ident(meta.weight)})"
    else:
        if meta.unit not in columns:
            raise PublicationError(f"{rel}: meta.privacy_unit names {meta.unit!r}, which is not a column")
        people = f"count(DISTINCT {quote_ident(meta.unit)})"
    group = f" GROUP BY {', '.join(dim_sql)}" if dims else ""
    rows = con.execute(f"SELECT {', '.join(dim_sql + [people])} FROM {source}{group}").fetchall()
    cells = {tuple(r[:-1]): int(r[-1] or 0) for r in rows}
    mapping = merge_cells(cells, rules.min_group_size)
    select = [f"CAST(m.p{i} AS {columns[d]}) AS {quote_ident(d)}" for i, d in enumerate(dims)]
    if meta.weight:
        for c in _measures(columns, classes, dims, meta):
            typ = columns[c]
            if typ.split("(")[0].upper() in INTEGER_TYPES:
                select.append(f"CAST(sum(s.{quote_ident(c)}) AS {typ}) AS {quote_ident(c)}")
            else:  # not additive: kept where the cell is one source row, NULL where rows were merged
                select.append(f"CASE WHEN count(*) = 1 THEN any_value(s.{quote_ident(c)}) END AS {quote_ident(c)}")
    else:
        select.append(f"count(DISTINCT s.{quote_ident(meta.unit)})::BIGINT AS {HOLDERS}")
    # The map from source keys to published keys, joined back in SQL (NULL-safe on every
    # dimension); with no dimension the one cell is the whole population, kept if big enough.
    keys = [k for k, pub in mapping.items() if pub is not None]
    name = "cf_cell_map"
    arrays = {"keep": pa.array([True] * len(keys), pa.bool_())}
    for i, _ in enumerate(dims):
        arrays[f"s{i}"] = pa.array([k[i] for k in keys]) if keys else pa.array([], pa.null())
        arrays[f"p{i}"] = pa.array([mapping[k][i] for k in keys], arrays[f"s{i}"].type) if keys else pa.array([], pa.null())
    con.register(name, pa.table(arrays))
    try:
        join = " AND ".join([f"s.{quote_ident(d)} IS NOT DISTINCT FROM m.s{i}::{columns[d]}" for i, d in enumerate(dims)] or ["true"])
        group_by = f" GROUP BY {', '.join(f'm.p{i}' for i in range(len(dims)))}" if dims else " HAVING count(*) > 0"
        body = f"SELECT {', '.join(select)} FROM {source} s JOIN {name} m ON {join}{group_by}"
        order = f" ORDER BY {', '.join(f'{quote_ident(d)} NULLS LAST' for d in dims)}" if dims else ""
        con.execute(f"CREATE TABLE {target} AS SELECT * FROM ({body}) cells{order}")
    finally:
        con.unregister(name)
    return cells, mapping


def _check_families(team: str, families: list[tuple[str, list[str], dict[Key, int], dict[Key, Key | None]]]) -> None:
    """Relations counting the same people must nest: one's dimensions a prefix of the other's,
    with the same published cells on the shared prefix (see the module docstring)."""
    ordered = sorted(families, key=lambda f: len(f[1]))
    for i, (coarse, cdims, ccells, cmap) in enumerate(ordered):
        for fine, fdims, fcells, fmap in ordered[i + 1:]:
            if fdims[: len(cdims)] != cdims:
                raise PublicationError(
                    f"team {team}: {coarse} (cells by {', '.join(cdims) or 'nothing'}) and {fine} (by {', '.join(fdims)}) count "
                    "the same people with dimensions that do not nest; declare meta.privacy_cells so one list is a prefix of the other")
            coarse_counts = published_counts(ccells, cmap)
            fine_counts: dict[Key, int] = defaultdict(int)
            for key, n in fcells.items():
                if fmap[key] is not None:
                    fine_counts[fmap[key][: len(cdims)]] += n
            if coarse_counts != dict(fine_counts):
                raise PublicationError(
                    f"team {team}: {coarse} and {fine} count different people on the cells they share ({', '.join(cdims)}); "
                    "their merged cells could be differenced, so neither is published")


# -- every team


@dataclass(frozen=True)
class CellSpec:
    dims: tuple[str, ...]
    weight: str | None = None
    unit: str | None = None


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def load_cell_specs(manifest_path: Path) -> dict[str, CellSpec]:
    """`schema.relation` → how it counts people, from the dbt manifest's model `meta`
    (`privacy_cells` with `privacy_group_weight` or `privacy_unit`)."""
    data = json.loads(Path(manifest_path).read_text())
    specs: dict[str, CellSpec] = {}
    for node in data.get("nodes", {}).values():
        if node.get("resource_type") not in ("model", "seed", "snapshot"):
            continue
        meta = (node.get("meta") or {}) | ((node.get("config") or {}).get("meta") or {})
        weight, unit = meta.get("privacy_group_weight"), meta.get("privacy_unit")
        if not (weight or unit):
            continue
        rel = f"{node['schema']}.{node.get('alias') or node['name']}".lower()
        if bool(weight) == bool(unit):
            raise PublicationError(f"{rel}: declare either meta.privacy_group_weight or meta.privacy_unit, not both")
        dims = tuple(str(d).lower() for d in meta.get("privacy_cells") or ())
        specs[rel] = CellSpec(dims, str(weight).lower() if weight else None, str(unit).lower() if unit else None)
    return specs


def build_all(con: duckdb.DuckDBPyConnection, snapshot: Path, rules: Iterable[TeamRules], manifest: Manifest,
              specs: Mapping[str, CellSpec], data_date: date | None = None) -> dict[str, Built]:
    """Build every team's file for `snapshot` from `con` (the snapshot opened, default catalog),
    into `<snapshot>.teams/` through a temporary folder renamed at the end; each `<team>.json`
    records `data_date`, which every answer read from it reports."""
    final = teams_dir(snapshot)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: dict[str, Built] = {}
    try:
        for team_rules in sorted(rules, key=lambda r: r.team):
            path = tmp / team_snapshot(snapshot, team_rules.team).name
            built = build_team(con, team_rules, manifest, specs, path)
            built.data_date = data_date
            (tmp / f"{team_rules.team}.json").write_text(built.to_json() + "\n")
            for f in (path, tmp / f"{team_rules.team}.json"):
                os.chmod(f, 0o444)
            out[team_rules.team] = built
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def publish_teams(snapshot: Path, rules: Iterable[TeamRules], manifest_path: Path, credentials: Iterable = (),
                  live_catalog: str = "warehouse", data_date: date | None = None) -> dict[str, Built]:
    """The `prepare` step of `Backend.publish`: open the new snapshot and build every team's file.

    A DuckDB snapshot is attached under the live warehouse's catalog name (`live_catalog`, the
    file's stem): dbt's views name that catalog (`"warehouse"."raw"."x"`), which a file opened
    under its own name does not have. A DuckLake snapshot is attached as `lake`, as it was written."""
    specs = load_cell_specs(manifest_path)
    manifest = load_manifest(manifest_path)
    con = open_snapshot(Path(snapshot), tuple(credentials), file_catalog=live_catalog).con
    try:
        return build_all(con, snapshot, rules, manifest, specs, data_date)
    finally:
        con.close()
