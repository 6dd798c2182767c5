"""The loader on hand-made files: once-only, nothing dropped, bad files refused whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.landing_files import DEVICES_CSV  # noqa: E402

from ingest.contracts import CLEARING, TELEMETRY
from ingest.loader import load_landing


def reading(seq: int, device: str = "D1", kind: str = "locker_pickup", value: float = 2, **over) -> dict:
    row = {
        "device_id": device, "hub_id": "H1", "seq": seq,
        "device_time": "2026-01-05T08:00:00+01:00", "received_at": "2026-01-05T07:00:02Z",
        "kind": kind, "category": "grocery" if kind.startswith("locker") else None,
        "value": value, "unit": "item" if kind.startswith("locker") else "percent",
    }
    row.update(over)
    return row


def write_jsonl(path: Path, rows: list, newline_at_end: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def telemetry_file(landing: Path, name: str, day: str = "2026-01-05") -> Path:
    return landing / TELEMETRY.name / day / name


def manifest(con) -> list[dict]:
    cur = con.execute("SELECT file_path, status, rows_loaded, rows_duplicate, rows_quarantined, reason FROM raw._load_manifest ORDER BY started_at")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_file_over_its_reject_ratio_is_refused_whole(landing, con):
    rows = [reading(i) for i in range(1, 40)]
    rows[4] = "{not json"
    rows[9] = dict(reading(10), seq="abc")
    rows[14] = reading(15, device="D99")
    write_jsonl(telemetry_file(landing, "a.jsonl"), rows)
    out = {o.contract: o for o in load_landing(con, landing)}
    assert out["telemetry"].status == "refused"  # 3/39 bad > 5 % threshold? 7.7 %: refused whole
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM raw._quarantine").fetchone()[0] == 0
    assert "3 of 39 rows rejected" in out["telemetry"].reason


def test_bad_rows_quarantined_with_line_field_reason_and_text(landing, con):
    rows = [reading(i) for i in range(1, 101)]
    rows[4] = "{not json"
    rows[9] = dict(reading(10), seq="abc")
    rows[14] = reading(15, device="D99")
    rows[19] = reading(20, kind="battery", value=140)
    write_jsonl(telemetry_file(landing, "a.jsonl"), rows)
    load_landing(con, landing)
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 96
    q = con.execute("SELECT line, field, reason, raw_text FROM raw._quarantine ORDER BY line").fetchall()
    assert [(r[0], r[1]) for r in q] == [(5, None), (10, "seq"), (15, "device_id"), (20, "value")]
    assert q[0][2] == "unparseable JSON line" and q[0][3] == "{not json"
    assert q[2][2] == "unknown device"
    assert "battery" in q[3][2]
    (m,) = manifest(con)[-1:]
    assert (m["rows_loaded"], m["rows_quarantined"], m["rows_duplicate"]) == (96, 4, 0)


def test_same_file_twice_and_redelivered_under_another_name_loads_once(landing, con):
    f = write_jsonl(telemetry_file(landing, "a.jsonl"), [reading(i) for i in range(1, 11)])
    load_landing(con, landing)
    load_landing(con, landing)  # unchanged: skipped without a new manifest row
    again = telemetry_file(landing, "a-again.jsonl", day="2026-01-06")
    again.parent.mkdir(parents=True)
    shutil.copy(f, again)
    outcomes = load_landing(con, landing)
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 10
    statuses = [m["status"] for m in manifest(con) if "telemetry" in m["file_path"]]
    assert statuses == ["loaded", "duplicate_file"]
    assert [o.status for o in outcomes if o.contract == "telemetry"] == ["skipped", "duplicate_file"]


def test_rows_repeated_across_files_are_counted_as_duplicates(landing, con):
    write_jsonl(telemetry_file(landing, "a.jsonl"), [reading(i) for i in range(1, 11)])
    write_jsonl(telemetry_file(landing, "b.jsonl", day="2026-01-06"), [reading(i) for i in range(6, 16)] + [reading(15)])
    load_landing(con, landing)
    assert con.execute("SELECT count(*), count(DISTINCT seq) FROM raw.telemetry").fetchone() == (15, 15)
    m = [x for x in manifest(con) if "telemetry" in x["file_path"]]
    assert [(x["rows_loaded"], x["rows_duplicate"]) for x in m] == [(10, 0), (5, 6)]


def test_same_name_new_content_is_a_new_version(landing, con):
    f = write_jsonl(telemetry_file(landing, "a.jsonl"), [reading(i) for i in range(1, 6)])
    load_landing(con, landing)
    write_jsonl(f, [reading(i) for i in range(1, 9)])
    load_landing(con, landing)
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 8
    versions = con.execute("SELECT version, rows_loaded, rows_duplicate FROM raw._load_manifest WHERE contract='telemetry' ORDER BY version").fetchall()
    assert versions == [(1, 5, 0), (2, 3, 5)]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b'{"device_id": "D1", "hub_id": "H1", "seq": 1, "device_time": "2026-01-05T08:00:00+01:00", "received_at": "2026-01-05T07:00:02Z", "kind": "lock', "truncated"),
    ],
)
def test_empty_and_truncated_files_are_refused_whole(landing, con, content, reason):
    good = "".join(json.dumps(reading(i)) + "\n" for i in range(1, 50)).encode()
    p = telemetry_file(landing, "x.jsonl")
    p.parent.mkdir(parents=True)
    p.write_bytes(good + content if content else content)
    (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
    assert o.status == "refused" and reason in o.reason
    assert p.exists()  # kept in the landing zone
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 0


def test_invalid_utf8_line_is_quarantined(landing, con):
    body = "".join(json.dumps(reading(i)) + "\n" for i in range(1, 50)).encode() + b'{"device_id": "D1\xff\xfe"}\n'
    p = telemetry_file(landing, "x.jsonl")
    p.parent.mkdir(parents=True)
    p.write_bytes(body)
    load_landing(con, landing)
    assert con.execute("SELECT reason FROM raw._quarantine").fetchall() == [("invalid UTF-8",)]
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 49


def test_csv_with_changed_columns_is_refused(landing, con):
    p = landing / "pass_scans" / "2026-01-05" / "s.csv"
    p.parent.mkdir(parents=True)
    p.write_text("scan_id,pass_id,pass_type,location_id,device_id,scanned_at,result,reason\nS1,P1,transit,H1,D1,2026-01-05T08:00:00+01:00,accepted,\n")
    (o,) = [o for o in load_landing(con, landing) if o.contract == "pass_scans"]
    assert o.status == "refused" and "columns changed" in o.reason and "entitlements" in o.reason


def test_header_only_csv_is_refused(landing, con):
    p = landing / "pass_scans" / "2026-01-05" / "s.csv"
    p.parent.mkdir(parents=True)
    p.write_text("scan_id,pass_id,pass_type,location_id,device_id,scanned_at,result,reason,entitlements\n")
    (o,) = [o for o in load_landing(con, landing) if o.contract == "pass_scans"]
    assert o.status == "refused" and "header only" in o.reason


def test_late_events_land_in_their_event_date_and_skew_is_flagged(landing, con):
    late = reading(1, device_time="2026-01-02T09:00:00+01:00", received_at="2026-01-02T08:00:01Z")
    skewed = reading(2, device_time="2026-01-05T12:00:00+01:00", received_at="2026-01-05T07:00:00Z")
    write_jsonl(telemetry_file(landing, "a.jsonl", day="2026-01-05"), [late, skewed])
    (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
    assert [str(d) for d in o.affected_dates] == ["2026-01-02", "2026-01-05"]
    rows = con.execute("SELECT seq, event_date::VARCHAR, is_clock_skewed, event_ts::VARCHAR FROM raw.telemetry ORDER BY seq").fetchall()
    assert rows[0] == (1, "2026-01-02", False, "2026-01-02 08:00:00")
    assert rows[1] == (2, "2026-01-05", True, "2026-01-05 07:00:00")  # gateway clock used, flag kept


def test_clearing_batch_must_add_up_to_its_header(landing, con):
    header = {"record": "header", "batch_id": "B1", "line_count": 2, "total_cents": 300, "cleared_at": "2026-01-06T02:00:00Z"}
    lines = [
        {"record": "line", "batch_id": "B1", "line_no": 1, "txn_id": "T1", "amount_cents": 100, "settled_at": "2026-01-06T02:00:00Z"},
        {"record": "line", "batch_id": "B1", "line_no": 2, "txn_id": "T2", "amount_cents": 200, "settled_at": "2026-01-06T02:00:00Z"},
    ]
    write_jsonl(landing / CLEARING.name / "2026-01-06" / "ok.jsonl", [header] + lines)
    write_jsonl(landing / CLEARING.name / "2026-01-06" / "short.jsonl", [dict(header, batch_id="B2")] + [dict(lines[0], batch_id="B2")])
    out = {o.path.split("/")[-1]: o for o in load_landing(con, landing) if o.contract == "clearing"}
    assert out["ok.jsonl"].status == "loaded" and out["ok.jsonl"].loaded == 2
    assert out["short.jsonl"].status == "refused" and "header says 2 lines" in out["short.jsonl"].reason
    assert con.execute("SELECT batch_id, line_count, total_cents FROM raw.clearing_batches").fetchall() == [("B1", 2, 300)]


def test_refused_file_is_retried_but_recorded_once_per_reason(landing, con):
    p = telemetry_file(landing, "x.jsonl")
    write_jsonl(p, [reading(1)], newline_at_end=True)
    shutil.rmtree(landing / "reference")  # no device reference yet
    load_landing(con, landing)
    load_landing(con, landing)
    assert [m["status"] for m in manifest(con)] == ["refused"]
    (landing / "reference" / "devices").mkdir(parents=True)
    (landing / "reference" / "devices" / "devices.csv").write_text(DEVICES_CSV)
    load_landing(con, landing)
    assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 1


def test_delivery_dates_restrict_event_files_but_not_reference(landing, con):
    write_jsonl(telemetry_file(landing, "a.jsonl", day="2026-01-05"), [reading(1)])
    write_jsonl(telemetry_file(landing, "b.jsonl", day="2026-01-06"), [reading(2)])
    from datetime import date

    outcomes = load_landing(con, landing, delivery_dates={date(2026, 1, 6)})
    assert sorted(o.path for o in outcomes) == ["reference/devices/devices.csv", "telemetry/2026-01-06/b.jsonl"]
    assert con.execute("SELECT list(seq) FROM raw.telemetry").fetchone()[0] == [2]


def test_manifest_table_has_the_columns_of_a_manifest_row(landing, con):
    from dataclasses import fields

    from ingest.manifest import ManifestRow

    load_landing(con, landing)
    described = [r[0] for r in con.execute("DESCRIBE raw._load_manifest").fetchall()]
    assert described == [f.name for f in fields(ManifestRow)]


def test_ingest_config_is_read_from_the_mapping_it_is_given():
    from ingest.config import BATCH_BYTES_ENV, CHUNK_BYTES_ENV, FAULT_ENV, PARSE_WORKERS_ENV, IngestConfig, ingest_config_from_env

    assert ingest_config_from_env({}) == IngestConfig()
    assert ingest_config_from_env({BATCH_BYTES_ENV: " ", FAULT_ENV: ""}) == IngestConfig()
    got = ingest_config_from_env({BATCH_BYTES_ENV: "1024", CHUNK_BYTES_ENV: "4096", PARSE_WORKERS_ENV: "3", FAULT_ENV: "in_batch:/tmp/m"})
    assert got == IngestConfig(batch_bytes=1024, chunk_bytes=4096, parse_workers=3, fault="in_batch:/tmp/m")


def test_a_warehouse_made_before_hubs_had_sites_takes_the_new_hubs_file(tmp_path):
    """raw.hubs of an older warehouse (id, neighbourhood, name) grows the contract's new
    columns; the next hubs snapshot loads whole, with its address and coordinates."""
    import duckdb
    from support.landing_files import put

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema raw")
    con.execute("create table raw.hubs (hub_id VARCHAR, neighbourhood_id VARCHAR, name VARCHAR, "
                "_file_sha256 VARCHAR, _loaded_at TIMESTAMP)")
    con.execute("insert into raw.hubs values ('H1', 'N1', 'Hub one', 'old', '2026-01-01 00:00:00')")
    landing = tmp_path / "landing"
    put(landing, "reference/hubs/hubs.csv",
        b"hub_id,neighbourhood_id,name,address,lat,lon\nH1,N1,Hub one,Kerkstraat 1,52.371,4.902\n")
    load_landing(con, landing)
    rows = con.execute("select address, lat, lon from raw.hubs order by _loaded_at").fetchall()
    assert rows[-1] == ("Kerkstraat 1", 52.371, 4.902)
    con.close()
