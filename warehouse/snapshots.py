"""Published snapshots: the `published/CURRENT` pointer, and opening a snapshot read-only.

Publishing writes a snapshot and then swaps the one-line pointer file atomically (write a temp
file, rename). Readers resolve the pointer per query, so a new publish switches them over at
once while a query in flight keeps its old snapshot open.

A snapshot is one of two things:

* `warehouse-<stamp>.duckdb`: a read-only copy of the live DuckDB file;
* `lake-<stamp>-v<N>.ducklake.json`: a DuckLake snapshot version. The file names the version,
  the catalog (without its password) and the data path; a reader attaches the lake read-only
  *at that version* (time travel), so later commits of the writers stay invisible.

Opening one returns its relations explicitly (`Snapshot.relations`): DuckLake's plan names a
table without its schema, and whoever reads plans needs to know what this snapshot holds, not
what some earlier snapshot of the process held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from warehouse.catalog_url import CatalogUrl
from warehouse.lake import attach_lake, lake_data_path, lake_relations
from warehouse.tables import quote_literal

POINTER = "CURRENT"
LAKE_SUFFIX = ".ducklake.json"
FILE_PREFIX = "warehouse-"
TEAMS_SUFFIX = ".teams"


def teams_dir(snapshot: Path) -> Path:
    """Where the relations built for each team from `snapshot` live (`<snapshot>.teams/`):
    written before CURRENT switches to the snapshot, removed with it."""
    snapshot = Path(snapshot)
    return snapshot.with_name(snapshot.name + TEAMS_SUFFIX)


def team_snapshot(snapshot: Path, team: str) -> Path:
    """The DuckDB file of what `team` may query in `snapshot` (governance.publication builds it)."""
    return teams_dir(snapshot) / f"{team}.duckdb"


def snapshot_of_team_file(team_file: Path) -> Path:
    """The snapshot a team's file (team_snapshot) was built from."""
    folder = Path(team_file).parent
    return folder.with_name(folder.name.removesuffix(TEAMS_SUFFIX))


def current_snapshot(published_dir: Path) -> Path | None:
    """The snapshot CURRENT points at, or None when nothing has been published yet."""
    try:
        name = (Path(published_dir) / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    return Path(published_dir) / name if name else None


def published_at(snapshot: Path) -> str | None:
    """When a snapshot was published (ISO 8601, UTC), from its file: the stamp in a file
    snapshot's name, the `published_at` a lake snapshot records."""
    name = Path(snapshot).name
    if name.endswith(LAKE_SUFFIX):
        try:
            return LakeSnapshot.read(Path(snapshot)).published_at
        except (OSError, ValueError, KeyError):
            return None
    if name.startswith(FILE_PREFIX):
        from datetime import datetime

        stamp = name[len(FILE_PREFIX):].split(".", 1)[0]
        for fmt in ("%Y%m%dT%H%M%S%fZ", "%Y%m%dT%H%M%SZ"):
            try:
                return datetime.strptime(stamp, fmt).replace(microsecond=0).isoformat() + "Z"
            except ValueError:
                continue
    return None


def switch_current(published_dir: Path, name: str) -> None:
    """Point CURRENT at `name` atomically."""
    tmp = published_dir / f".{POINTER}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, published_dir / POINTER)


def write_read_only(published_dir: Path, name: str, write, written=None) -> Path:
    """Write a snapshot file through a temp name (`write(tmp_path)`), make it read-only, rename.

    `written(tmp_path)`, when given, is called between the write and the rename."""
    tmp = published_dir / f".{name}.tmp"
    write(tmp)
    if written is not None:
        written(tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, published_dir / name)
    return published_dir / name


@dataclass(frozen=True)
class LakeSnapshot:
    """What `lake-<stamp>-v<N>.ducklake.json` holds: enough to attach the lake at version N."""

    version: int
    catalog: str  # CatalogUrl.public(): no password
    data_path: str
    published_at: str
    format: str = "ducklake"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> LakeSnapshot:
        data = json.loads(Path(path).read_text())
        if data.get("format") != "ducklake":
            raise ValueError(f"{path} is not a published DuckLake snapshot")
        return cls(**data)


def is_lake_snapshot(path: Path) -> bool:
    return Path(path).name.endswith(LAKE_SUFFIX)


@dataclass
class Snapshot:
    """An open, read-only published snapshot: its connection and the relations it holds."""

    path: Path
    con: duckdb.DuckDBPyConnection
    relations: frozenset[str]  # "schema.table", lower case, tables and views
    is_lake: bool

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_relations(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema NOT IN ('information_schema', 'pg_catalog')"
    ).fetchall()
    return frozenset(f"{s}.{t}".lower() for s, t in rows)


def _reader_catalog(published: CatalogUrl, credentials: Sequence[CatalogUrl]) -> CatalogUrl:
    """The published catalog with the reader's own credentials when one names the same database
    (a read-only role first, recommended); else as published, and libpq finds the password
    (PGPASSFILE, ~/.pgpass)."""
    for mine in credentials:
        if mine.same_database(published):
            return mine
    return published


def open_snapshot(snapshot: Path, credentials: Sequence[CatalogUrl] = (), config: dict | None = None,
                  file_catalog: str | None = None) -> Snapshot:
    """Open a published snapshot read-only: a DuckDB file, or the lake at its published version.

    `credentials`: catalogs whose user and password a lake reader may use (WarehouseSettings
    .reader_credentials()). `config` is the caller's DuckDB configuration. For a lake,
    `enable_external_access` false is applied right *after* the attach (the attach itself
    reaches PostgreSQL and loads two extensions by path); the lake's data path is then the only
    directory DuckDB may read, so SQL still cannot read other files, attach or load extensions.
    `file_catalog`: attach a DuckDB file snapshot under this catalog name (the live file's stem),
    so views that name the live catalog resolve.
    """
    config = dict(config or {})
    snapshot = Path(snapshot)
    if not is_lake_snapshot(snapshot) and file_catalog is not None:
        # under the live file's catalog name: dbt's views name it ("warehouse"."raw"."x"), and a
        # file opened under its own name has no such catalog (DESIGN.md, "Known traps")
        con = duckdb.connect(":memory:", config=config)
        try:
            con.execute(f"ATTACH {quote_literal(snapshot)} AS \"{file_catalog}\" (READ_ONLY)")
            con.execute(f'USE "{file_catalog}"')
            return Snapshot(snapshot, con, _file_relations(con), is_lake=False)
        except BaseException:
            con.close()
            raise
    if not is_lake_snapshot(snapshot):
        con = duckdb.connect(str(snapshot), read_only=True, config=config)
        try:
            return Snapshot(snapshot, con, _file_relations(con), is_lake=False)
        except BaseException:
            con.close()
            raise
    lake = LakeSnapshot.read(snapshot)
    lock_down = config.pop("enable_external_access", True) is False
    con = duckdb.connect(":memory:", config=config)
    try:
        catalog = _reader_catalog(CatalogUrl.parse(lake.catalog), credentials)
        attach_lake(con, catalog, read_only=True, snapshot_version=lake.version)
        relations = lake_relations(con)
        if lock_down:
            data_path = lake_data_path(con)
            con.execute(f"SET allowed_directories = [{quote_literal(data_path.rstrip('/') + '/')}]")
            con.execute("SET enable_external_access = false")
    except BaseException:
        con.close()
        raise
    return Snapshot(snapshot, con, relations, is_lake=True)
