"""A step whose inputs did not change since its last complete success is reported, not redone.

Re-running a day that is already in (the quiet night: `civicflow run --date <last day>` with no
new file) loads nothing, so dbt would rebuild the same rows and the forecast would fit the same
series into the same plan: three minutes for nothing. Each such step hashes what shapes its
output — for dbt the files loaded into raw, the raw tables' row counts and the dbt project; for
the forecast the content of the marts it reads, its calibration, its configuration and its code —
and compares it with the hash its last complete success stored in `raw._step_state`. When they
are equal, the step reports its assets and checks as unchanged (the stored check results, marked
as such) instead of redoing them. A step that starts real work clears its stored hash first, so a
failure half-way can never be mistaken for an unchanged warehouse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from warehouse.tables import table_exists, tables_in

STATE_DDL = """
CREATE TABLE IF NOT EXISTS raw._step_state (
    step VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    outcome VARCHAR NOT NULL
)
"""


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's result as stored (enough to report it again, marked unchanged)."""

    asset_key: tuple[str, ...]
    check_name: str
    passed: bool
    severity: str  # "ERROR" | "WARN"


@dataclass(frozen=True)
class StepState:
    fingerprint: str
    run_id: str
    checks: tuple[CheckOutcome, ...] = ()
    metadata: dict = field(default_factory=dict)  # per asset key "a/b": dump_metadata() of what to repeat


def digest(parts: Iterable[object]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def files_digest(paths: Iterable[Path], root: Path) -> str:
    """The content of these files (named relative to `root`), in a stable order."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(root)).encode() + b"\x00" + p.read_bytes() + b"\x00")
    return h.hexdigest()


def raw_digest(con: duckdb.DuckDBPyConnection) -> str:
    """What dbt reads, cheaply: the identity of every file loaded into raw and each raw table's
    row count (a replayed quarantine row or a hand edit changes a count without a new file).
    The bookkeeping tables (`_load_manifest`, `_quarantine`, this state) are no model's input
    and grow on a night that loads nothing, so only their loaded files count."""
    loaded = ""
    if table_exists(con, "raw", "_load_manifest"):
        loaded = con.execute(
            "SELECT coalesce(md5(string_agg(file_sha256 || ':' || contract, ',' ORDER BY file_sha256, contract)), '') "
            "FROM raw._load_manifest WHERE status = 'loaded'"
        ).fetchone()[0]
    tables = [t for t in tables_in(con, "raw", base_tables_only=True) if not t.startswith("_")]
    counts = [(t, con.execute(f'SELECT count(*) FROM raw."{t}"').fetchone()[0]) for t in tables]
    return digest([loaded, counts])


def relations_digest(con: duckdb.DuckDBPyConnection, relations: Iterable[str]) -> str:
    """The content of small relations (marts a step reads): an order-independent sum of row
    hashes and the row count per relation; a missing relation counts as its own value."""
    parts = []
    for rel in relations:
        schema, name = rel.split(".", 1)
        if not table_exists(con, schema, name):
            parts.append((rel, None))
            continue
        parts.append((rel, con.execute(f'SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM "{schema}"."{name}" t').fetchone()))
    return digest(parts)


# The metadata kinds a stored step repeats, by the constructor that rebuilds each.
METADATA_KINDS = {
    "IntMetadataValue": dg.MetadataValue.int, "FloatMetadataValue": dg.MetadataValue.float,
    "TextMetadataValue": dg.MetadataValue.text, "MarkdownMetadataValue": dg.MetadataValue.md,
    "PathMetadataValue": dg.MetadataValue.path, "JsonMetadataValue": dg.MetadataValue.json,
}


def dump_metadata(metadata: dict) -> dict:
    """An asset's metadata as JSON (kinds outside METADATA_KINDS are not repeated)."""
    return {k: [type(v).__name__, v.value] for k, v in metadata.items() if type(v).__name__ in METADATA_KINDS}


def load_metadata(stored: dict) -> dict:
    return {k: METADATA_KINDS[kind](value) for k, (kind, value) in stored.items() if kind in METADATA_KINDS}


def read_state(con: duckdb.DuckDBPyConnection, step: str) -> StepState | None:
    if not table_exists(con, "raw", "_step_state"):
        return None
    row = con.execute(
        "SELECT fingerprint, run_id, outcome FROM raw._step_state WHERE step = ? ORDER BY recorded_at DESC LIMIT 1", [step]
    ).fetchone()
    if row is None:
        return None
    outcome = json.loads(row[2])
    checks = tuple(CheckOutcome(tuple(c["asset_key"]), c["check_name"], bool(c["passed"]), c["severity"]) for c in outcome.get("checks", []))
    return StepState(row[0], row[1], checks, outcome.get("metadata", {}))


def clear_state(con: duckdb.DuckDBPyConnection, step: str) -> None:
    """Called before a step does real work: until it succeeds, nothing is 'unchanged'."""
    if table_exists(con, "raw", "_step_state"):
        con.execute("DELETE FROM raw._step_state WHERE step = ?", [step])


def write_state(con: duckdb.DuckDBPyConnection, step: str, state: StepState) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute(STATE_DDL)
    outcome = {
        "checks": [{"asset_key": list(c.asset_key), "check_name": c.check_name, "passed": c.passed, "severity": c.severity} for c in state.checks],
        "metadata": state.metadata,
    }
    con.execute("DELETE FROM raw._step_state WHERE step = ?", [step])
    con.execute(
        "INSERT INTO raw._step_state VALUES (?, ?, ?, ?, ?)",
        [step, state.fingerprint, state.run_id, datetime.now(UTC).replace(tzinfo=None), json.dumps(outcome, default=str)],
    )


# A run tagged so (`civicflow run --rebuild`) does the work whatever the fingerprints say.
REBUILD_TAG = "civicflow/rebuild"


def unchanged(context: dg.AssetExecutionContext, last: StepState | None, fingerprint: str) -> bool:
    """Whether this step may report its last result instead of redoing it."""
    if last is None or last.fingerprint != fingerprint or not whole_asset_selected(context) or context.run.tags.get(REBUILD_TAG) == "true":
        return False
    # Every check the step now declares must have a stored result to repeat (a check added
    # since the stored run has none: the step runs and produces it).
    stored = {dg.AssetCheckKey(dg.AssetKey(list(c.asset_key)), c.check_name) for c in last.checks}
    return set(context.selected_asset_check_keys) <= stored


def whole_asset_selected(context: dg.AssetExecutionContext) -> bool:
    """Only a run of every asset and check of this step may be skipped or recorded as complete."""
    ad = context.assets_def
    return set(context.selected_asset_keys) == set(ad.keys) and set(context.selected_asset_check_keys) == set(ad.check_keys)


def report_unchanged(context: dg.AssetExecutionContext, state: StepState, what: str):
    """The step's assets and checks, reported as they were after the run that built them."""
    since = state.run_id[:8]
    context.log.info(f"unchanged since run {since}: {what}; nothing rebuilt")
    ad = context.assets_def
    # In the order the building run yielded them (Dagster needs a multi-asset's outputs in
    # topological order); a selected key the state lacks comes last.
    order = {k: i for i, k in enumerate(state.metadata)}
    for key in sorted(context.selected_asset_keys, key=lambda k: (order.get(k.to_user_string(), len(order)), k.to_user_string())):
        yield dg.Output(None, output_name=ad.get_output_name_for_asset_key(key),
                        metadata={**load_metadata(state.metadata.get(key.to_user_string(), {})), "unchanged_since_run": dg.MetadataValue.text(since)})
    selected = set(context.selected_asset_check_keys)
    for c in state.checks:
        if dg.AssetCheckKey(dg.AssetKey(list(c.asset_key)), c.check_name) in selected:
            yield dg.AssetCheckResult(
                asset_key=dg.AssetKey(list(c.asset_key)), check_name=c.check_name, passed=c.passed,
                severity=dg.AssetCheckSeverity(c.severity),
                metadata={"unchanged": dg.MetadataValue.text(f"the result of run {since}: the data and the check are the same")},
            )


def output_metadata(context: dg.AssetExecutionContext, events: list) -> dict:
    """Per asset key, the metadata of its Output among a step's events, stored to repeat."""
    return {context.asset_key_for_output(ev.output_name).to_user_string(): dump_metadata(ev.metadata)
            for ev in events if isinstance(ev, dg.Output)}


def check_outcomes(events: list) -> tuple[CheckOutcome, ...]:
    return tuple(
        CheckOutcome(tuple(ev.asset_key.path), ev.check_name, bool(ev.passed), ev.severity.value)
        for ev in events if isinstance(ev, dg.AssetCheckResult)
    )
