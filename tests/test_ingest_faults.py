"""Fault suite for the loader: each test checks that nothing is lost or doubled.

"Accounted for" means: for every file that loaded, rows_loaded + rows_duplicate +
rows_quarantined = rows_in_file, raw holds exactly the loaded rows, raw._quarantine exactly
the quarantined ones; a refused file left nothing in raw and stays in the landing zone.
The basic cases (reject ratio, empty, truncated, header-only, invalid UTF-8 in JSON, CSV
columns changed, late events, new versions) are in test_ingest_loader.py; here are the
crash, chunking, schema-drift, retry and lock cases.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from support.crash import run_and_kill  # noqa: E402
from support.landing_files import SCAN_HEADER, jsonl, put, reading  # noqa: E402

from ingest.config import IngestConfig
from ingest.contracts import DEVICES, PASS_SCANS
from ingest.loader import load_landing


def scan(i: int, **over) -> str:
    row = {
        "scan_id": f"S{i:05d}", "pass_id": "P1", "pass_type": "transit", "location_id": "H1", "device_id": "D1",
        "scanned_at": "2026-01-05T08:00:00+01:00", "result": "accepted", "reason": "", "entitlements": "residency",
    }
    row.update(over)
    return ",".join(str(row[f]) for f in PASS_SCANS.field_names)


def count(con, sql: str, params=None) -> int:
    return con.execute(sql, params or []).fetchone()[0]


def assert_accounted(con, landing: Path) -> None:
    """Nothing lost or doubled: every line of every loaded file is in raw, a duplicate, or quarantined."""
    rows = con.execute(
        "SELECT file_path, file_sha256, contract, rows_in_file, rows_loaded, rows_duplicate, rows_quarantined "
        "FROM raw._load_manifest WHERE status = 'loaded'"
    ).fetchall()
    for path, sha, contract, n, loaded, dup, quarantined in rows:
        if contract in ("devices",):
            continue
        assert loaded + dup + quarantined == n, path
        assert count(con, f"SELECT count(*) FROM raw.{contract} WHERE _file_sha256 = ?", [sha]) == loaded, path
        assert count(con, "SELECT count(*) FROM raw._quarantine WHERE file_sha256 = ?", [sha]) == quarantined, path
    # every SHA loaded at most once, and nothing in raw without its manifest row
    assert count(con, "SELECT count(*) - count(DISTINCT file_sha256) FROM raw._load_manifest WHERE status = 'loaded'") == 0
    orphans = count(
        con,
        "SELECT count(*) FROM raw.telemetry t WHERE NOT EXISTS "
        "(SELECT 1 FROM raw._load_manifest m WHERE m.file_sha256 = t._file_sha256 AND m.status = 'loaded')",
    )
    assert orphans == 0


# --------------------------------------------------------------------------- crash mid-file

@pytest.mark.slow
def test_sigkill_inside_the_file_transaction_then_rerun_loads_the_file_exactly_once(landing, db, tmp_path):
    n = 30_000
    rows = [reading(i, device="D1" if i % 2 else "D2") for i in range(1, n + 1)]
    rows[100] = "{cut"  # one bad line: it must be quarantined exactly once too
    big = put(landing, "telemetry/2026-01-05/big.jsonl", jsonl(rows))
    with duckdb.connect(str(db)) as c:  # the device reference first: the kill lands in big.jsonl's transaction
        load_landing(c, landing, [DEVICES])
    # The child stops after its first chunk is written: rows written, not committed.
    run_and_kill(landing, db, "in_transaction", tmp_path / "in_transaction", chunk_bytes=256 << 10)

    con = duckdb.connect(str(db))
    try:
        # The crash left nothing of the file: no rows, no quarantine, no manifest row.
        assert count(con, "SELECT count(*) FROM raw.devices") == 2
        assert count(con, "SELECT count(*) FROM raw.telemetry") == 0
        assert count(con, "SELECT count(*) FROM raw._quarantine") == 0
        assert count(con, "SELECT count(*) FROM raw._load_manifest WHERE contract = 'telemetry'") == 0
        (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
        assert (o.status, o.loaded, o.quarantined, o.duplicate) == ("loaded", n - 1, 1, 0)
        assert count(con, "SELECT count(*) FROM raw.telemetry") == n - 1
        assert count(con, "SELECT count(DISTINCT (device_id, seq)) FROM raw.telemetry") == n - 1
        assert con.execute("SELECT line, reason FROM raw._quarantine").fetchall() == [(101, "unparseable JSON line")]
        assert big.exists()
        # and a third run changes nothing
        assert [o.status for o in load_landing(con, landing) if o.contract == "telemetry"] == ["skipped"]
        assert count(con, "SELECT count(*) FROM raw.telemetry") == n - 1
        assert_accounted(con, landing)
    finally:
        con.close()


# --------------------------------------------------------------------------- chunked files


def test_a_file_read_in_many_chunks_is_still_one_transaction(landing, con):
    config = IngestConfig(chunk_bytes=4096)
    rows = [reading(i) for i in range(1, 2001)]
    rows[1500] = reading(7)  # a device retry of line 7, thousands of lines (and many chunks) later
    rows[1800] = dict(reading(1801), seq="abc")
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl(rows))
    (o,) = [o for o in load_landing(con, landing, config=config) if o.contract == "telemetry"]
    assert (o.loaded, o.duplicate, o.quarantined, o.rows_in_file) == (1998, 1, 1, 2000)
    assert con.execute("SELECT line, field FROM raw._quarantine").fetchall() == [(1801, "seq")]
    assert count(con, "SELECT _line FROM raw.telemetry WHERE seq = 7") == 7  # the first line with a key wins
    assert_accounted(con, landing)


def test_truncated_big_file_is_refused_whole_even_after_its_first_chunks_were_written(landing, con):
    data = jsonl([reading(i) for i in range(1, 1001)])
    p = put(landing, "telemetry/2026-01-05/cut.jsonl", data[: len(data) - 40])  # last line cut, no line end
    (o,) = [o for o in load_landing(con, landing, config=IngestConfig(chunk_bytes=4096)) if o.contract == "telemetry"]
    assert o.status == "refused" and "truncated (last line 1000" in o.reason
    assert count(con, "SELECT count(*) FROM raw.telemetry") == 0
    assert count(con, "SELECT count(*) FROM raw._quarantine") == 0
    assert con.execute("SELECT status, rows_in_file FROM raw._load_manifest WHERE contract = 'telemetry'").fetchall() == [("refused", 0)]
    assert p.exists()


def test_file_over_its_reject_ratio_across_chunks_is_refused_whole(landing, con):
    rows = [reading(i) for i in range(1, 301)]
    for i in range(250, 300):  # bad rows only in the last chunks: the first chunks were already written
        rows[i] = dict(rows[i], unit="litre")
    put(landing, "telemetry/2026-01-05/drift.jsonl", jsonl(rows))
    (o,) = [o for o in load_landing(con, landing, config=IngestConfig(chunk_bytes=2048)) if o.contract == "telemetry"]
    assert o.status == "refused" and "50 of 300 rows rejected" in o.reason and "line 251, field unit" in o.reason
    assert count(con, "SELECT count(*) FROM raw.telemetry") == 0
    assert count(con, "SELECT count(*) FROM raw._quarantine") == 0


# --------------------------------------------------------------------------- delivered twice, empty files


def test_same_file_delivered_twice_in_one_run_loads_once(landing, con):
    data = jsonl([reading(i) for i in range(1, 21)])
    put(landing, "telemetry/2026-01-05/a.jsonl", data)
    put(landing, "telemetry/2026-01-06/a-resent.jsonl", data)
    out = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
    assert [(o.status, o.loaded) for o in out] == [("loaded", 20), ("duplicate_file", 0)]
    assert count(con, "SELECT count(*) FROM raw.telemetry") == 20
    assert_accounted(con, landing)


@pytest.mark.parametrize(
    "rel, data, reason",
    [
        ("pass_scans/2026-01-05/zero.csv", b"", "empty file"),
        ("telemetry/2026-01-05/blank.jsonl", b"\n\n  \n", "empty file"),
        ("pass_scans/2026-01-05/header.csv", (SCAN_HEADER + "\r\n").encode(), "header only"),
        ("clearing/2026-01-06/header.jsonl", b'{"record":"header","batch_id":"B1","line_count":2,"total_cents":300,"cleared_at":"2026-01-06T02:00:00Z"}\n', "header says 2 lines"),
    ],
)
def test_empty_and_header_only_files_are_refused_and_kept(landing, con, rel, data, reason):
    p = put(landing, rel, data)
    (o,) = [o for o in load_landing(con, landing) if o.path == rel]
    assert o.status == "refused" and reason in o.reason
    assert p.exists()
    assert count(con, "SELECT count(*) FROM raw._quarantine") == 0


# --------------------------------------------------------------------------- encoding


def test_invalid_utf8_in_a_csv_line_is_quarantined_with_its_text(landing, con):
    lines = [SCAN_HEADER] + [scan(i) for i in range(1, 41)]
    body = ("\n".join(lines) + "\n").encode() + scan(41, pass_id="P\udcff").encode("utf-8", "surrogateescape") + b"\n"
    put(landing, "pass_scans/2026-01-05/s.csv", body)
    (o,) = [o for o in load_landing(con, landing) if o.contract == "pass_scans"]
    assert (o.loaded, o.quarantined) == (40, 1)
    line, reason, raw = con.execute("SELECT line, reason, raw_text FROM raw._quarantine").fetchone()
    assert (line, reason) == (42, "invalid UTF-8") and raw.startswith("S00041,P\ufffd")
    assert_accounted(con, landing)


# --------------------------------------------------------------------------- schema drift


@pytest.mark.parametrize(
    "header, words",
    [
        (SCAN_HEADER + ",gate", ["unexpected ['gate']"]),
        (SCAN_HEADER.replace(",entitlements", ""), ["missing ['entitlements']"]),
        (SCAN_HEADER.replace("scan_id,pass_id", "pass_id,scan_id"), ["another order"]),
        (SCAN_HEADER.replace("scanned_at", "scan_time"), ["missing ['scanned_at']", "unexpected ['scan_time']"]),
    ],
)
def test_csv_with_extra_missing_renamed_or_reordered_columns_is_refused(landing, con, header, words):
    p = put(landing, "pass_scans/2026-01-05/s.csv", (header + "\n" + scan(1) + "\n").encode())
    (o,) = [o for o in load_landing(con, landing) if o.contract == "pass_scans"]
    assert o.status == "refused" and "columns changed" in o.reason
    for w in words:
        assert w in o.reason
    assert count(con, "SELECT count(*) FROM raw.pass_scans") == 0 and p.exists()


def test_jsonl_extra_key_is_ignored_loaded_and_recorded(landing, con):
    rows = [reading(i) for i in range(1, 11)]
    rows[3] = dict(rows[3], firmware="2.1.0")
    rows[4] = dict(rows[4], firmware="2.1.0", rssi=None)
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl(rows))
    (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
    assert (o.status, o.loaded, o.quarantined) == ("loaded", 10, 0)
    assert o.extra_keys == ["firmware", "rssi"]
    assert con.execute("SELECT extra_keys FROM raw._load_manifest WHERE contract = 'telemetry'").fetchone()[0] == ["firmware", "rssi"]
    assert "firmware" not in [c[0] for c in con.execute("DESCRIBE raw.telemetry").fetchall()]


def test_jsonl_missing_and_retyped_values_are_quarantined_by_field(landing, con):
    rows = [reading(i) for i in range(1, 201)]  # 8 bad of 200: under the 5 % threshold
    del rows[1]["device_time"]  # missing required key
    rows[2] = dict(rows[2], seq="3")  # a number sent as a string of digits: still an integer
    rows[3] = dict(rows[3], seq=4.5)
    rows[4] = dict(rows[4], value=True)
    rows[5] = dict(rows[5], device_time=1767600000)  # epoch seconds instead of ISO-8601
    rows[6] = dict(rows[6], hub_id={"id": "H1"})  # an object where a string belongs: not its JSON text
    rows[7] = "[1, 2, 3]"
    rows[8] = '{"device_id": "D1", "device_id": "D2"}'  # a repeated key: which value is meant is unknown
    del rows[9]["category"]  # required for a pickup
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl(rows))
    (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
    got = con.execute("SELECT line, field, reason FROM raw._quarantine ORDER BY line").fetchall()
    assert got == [
        (2, "device_time", "missing required field"),
        (4, "seq", "not a valid integer"),
        (5, "value", "not a valid number"),
        (6, "device_time", "not an ISO-8601 timestamp with a UTC offset"),
        (7, "hub_id", "a JSON object, not a string"),
        (8, None, "not a JSON object"),
        (9, None, "duplicate key 'device_id' in the JSON object (which value is meant is unknown)"),
        (10, "category", "category required for locker deposits and pickups"),
    ]
    assert (o.loaded, o.quarantined) == (192, 8) and o.status == "loaded"
    assert count(con, "SELECT seq FROM raw.telemetry WHERE _line = 3") == 3
    assert_accounted(con, landing)


# --------------------------------------------------------------------------- retries and late data


def test_device_retries_across_three_files_and_two_runs_give_one_row_each(landing, con):
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl([reading(i) for i in range(1, 11)]))
    put(landing, "telemetry/2026-01-06/b.jsonl", jsonl([reading(i) for i in range(5, 16)] + [reading(12)]))
    load_landing(con, landing)
    put(landing, "telemetry/2026-01-07/c.jsonl", jsonl([reading(i) for i in range(1, 21)]))
    load_landing(con, landing)
    assert con.execute("SELECT count(*), count(DISTINCT seq) FROM raw.telemetry").fetchone() == (20, 20)
    got = con.execute("SELECT rows_loaded, rows_duplicate FROM raw._load_manifest WHERE contract = 'telemetry' ORDER BY file_path").fetchall()
    assert got == [(10, 0), (5, 7), (5, 15)]
    assert_accounted(con, landing)


def test_events_days_late_land_in_their_date_and_the_manifest_records_the_dates(landing, con):
    put(landing, "telemetry/2026-01-05/on_time.jsonl", jsonl([reading(i, day=5) for i in range(1, 6)]))
    load_landing(con, landing)
    late = [reading(100 + i, day=d) for i, d in enumerate((1, 2, 2, 5))]
    put(landing, "telemetry/2026-01-09/late.jsonl", jsonl(late))
    (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry" and o.status == "loaded"]
    assert [str(d) for d in o.affected_dates] == ["2026-01-01", "2026-01-02", "2026-01-05"]
    stored = con.execute("SELECT affected_dates FROM raw._load_manifest WHERE file_path LIKE '%late.jsonl'").fetchone()[0]
    assert [str(d) for d in stored] == ["2026-01-01", "2026-01-02", "2026-01-05"]
    by_date = dict(con.execute("SELECT event_date::VARCHAR, count(*) FROM raw.telemetry GROUP BY 1").fetchall())
    assert by_date == {"2026-01-01": 1, "2026-01-02": 2, "2026-01-05": 6}


def test_a_late_retry_adds_no_affected_date(landing, con):
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl([reading(i, day=3) for i in range(1, 6)]))
    load_landing(con, landing)
    put(landing, "telemetry/2026-01-08/retry.jsonl", jsonl([reading(1, day=3), reading(50, day=4)]))
    (o,) = [o for o in load_landing(con, landing) if o.status == "loaded" and o.contract == "telemetry"]
    assert (o.loaded, o.duplicate) == (1, 1) and [str(d) for d in o.affected_dates] == ["2026-01-04"]


# --------------------------------------------------------------------------- second writer

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])  # read-write: DuckDB's file lock
    con.execute("CREATE TABLE IF NOT EXISTS held (x INT)")
    print("holding", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_second_writer_holding_the_database_gives_a_bounded_retry_then_a_clear_error(landing, db):
    from pipelines.resources import open_with_retry
    from warehouse.backends import DuckDBFile
    from warehouse.retry import WarehouseLocked

    backend = DuckDBFile(db)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        with pytest.raises(WarehouseLocked) as err:
            open_with_retry(backend, attempts=3, first_wait_s=0.05)
        waited = time.monotonic() - t0
        msg = str(err.value)
        assert str(db) in msg and "locked by another process" in msg and "after 3 attempts" in msg
        assert "lock" in msg.lower() and str(holder.pid) in msg  # DuckDB names the holding process
        assert waited < 60  # bounded: 0.05 + 0.1 s of back-off, not a hang
    finally:
        holder.kill()
        holder.wait(timeout=30)
    con = open_with_retry(backend, attempts=3, first_wait_s=0.05)  # the lock is gone: the load goes ahead
    try:
        load_landing(con, landing)
        assert count(con, "SELECT count(*) FROM raw.devices") == 2
    finally:
        con.close()
