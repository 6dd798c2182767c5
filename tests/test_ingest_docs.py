"""Data Docs and quarantine commands, and the GX check's failure message."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ingest.contracts import CONTRACTS, TELEMETRY
from ingest.loader import load_landing
from ingest.raw_tables import ensure_raw_schema

DEVICES_CSV = "device_id,device_type,hub_id,location_id,neighbourhood_id\nD1,locker,H1,H1,N1\n"


def reading(seq: int, **over) -> dict:
    row = {
        "device_id": "D1", "hub_id": "H1", "seq": seq,
        "device_time": "2026-01-05T08:00:00+01:00", "received_at": "2026-01-05T07:00:02Z",
        "kind": "battery", "category": None, "value": 80, "unit": "percent",
    }
    row.update(over)
    return row


@pytest.fixture
def loaded_home(home_dir: Path) -> Path:
    """A home whose live warehouse holds a few loaded rows and two quarantined ones (nothing published)."""
    landing = home_dir / "landing"
    (landing / "reference" / "devices").mkdir(parents=True)
    (landing / "reference" / "devices" / "devices.csv").write_text(DEVICES_CSV)
    rows = [json.dumps(reading(i)) for i in range(1, 60)] + ["{broken", json.dumps(reading(99, device_id="D404"))]
    (landing / "telemetry" / "2026-01-05").mkdir(parents=True)
    (landing / "telemetry" / "2026-01-05" / "t.jsonl").write_text("\n".join(rows) + "\n")
    con = duckdb.connect(str(home_dir / "warehouse.duckdb"))
    load_landing(con, landing)
    con.close()
    return home_dir


def _app():
    from pipelines.cli import app

    return app


@pytest.mark.slow
def test_data_docs_command_writes_an_index_naming_every_raw_suite(loaded_home):
    result = CliRunner().invoke(_app(), ["ingest", "data-docs", "--home", str(loaded_home)])
    assert result.exit_code == 0, result.output
    index = Path(result.output.strip().splitlines()[-1])
    assert index.name == "index.html" and index.exists()
    assert index.is_relative_to(loaded_home / "gx")
    html = index.read_text()
    con = duckdb.connect(str(loaded_home / "warehouse.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    con.close()
    for name in CONTRACTS:
        assert name in tables
        assert f"raw_{name}" in html, name


@pytest.mark.slow
def test_data_docs_open_offline_in_chromium_and_show_suites_and_failures(loaded_home, tmp_path):
    """The site requests nothing (no CDN, no script), its index lists every suite, and the
    telemetry page shows the day-level expectations this battery-only day fails."""
    from support.chromium import chromium, open_page

    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    result = CliRunner().invoke(_app(), ["ingest", "data-docs", "--home", str(loaded_home)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    index = Path(result.output.strip().splitlines()[-1])
    site = index.parent
    for html in site.glob("*.html"):
        assert "<script" not in html.read_text() and "http" not in html.read_text(), html
    page = open_page(index.as_uri(), width=1200, height=900, settle_s=0.5)
    (tmp_path / "index.png").write_bytes(page.screenshot)
    assert page.requests and page.remote == []
    for name in CONTRACTS:
        assert f">raw_{name}</a>" in page.dom, name
    assert "1 failing" in page.dom  # telemetry: the one table with rows that fail
    suite = open_page((site / "raw_telemetry.html").as_uri(), width=1200, height=1300, settle_s=0.5)
    (tmp_path / "telemetry.png").write_bytes(suite.screenshot)
    assert suite.remote == []
    assert "Failed expectations" in suite.dom
    assert "expect_column_values_to_be_between(share_kind_door): 1 of 1 days unexpected (2026-01-05: 0)" in suite.dom
    assert "expect_column_max_to_be_between(latest_event_date): observed 2026-01-05" in suite.dom  # stale by today
    assert "expect_compound_columns_to_be_unique" in suite.dom and "0 of 59 rows" in suite.dom
    results = json.loads((site / "validations.json").read_text())
    assert {s["suite"] for s in results["suites"]} == {f"raw_{n}" for n in CONTRACTS}


def test_quarantine_command_lists_file_line_field_reason_and_text(loaded_home):
    result = CliRunner().invoke(_app(), ["ingest", "quarantine", "--home", str(loaded_home), "--contract", "telemetry"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "telemetry/2026-01-05/t.jsonl" in out
    assert "unparseable JSON line" in out and "{broken" in out
    assert "unknown device" in out and "device_id" in out and "D404" in out
    bad = CliRunner().invoke(_app(), ["ingest", "quarantine", "--home", str(loaded_home), "--contract", "nope"])
    assert bad.exit_code == 2 and "unknown contract" in bad.output


def test_ingest_commands_have_help():
    for args in (["ingest", "--help"], ["ingest", "data-docs", "--help"], ["ingest", "quarantine", "--help"], ["ingest", "replay-quarantine", "--help"]):
        result = CliRunner().invoke(_app(), args)
        assert result.exit_code == 0 and "--home" in result.output or "data-docs" in result.output


def test_failing_gx_check_says_which_expectation_failed_on_how_many_rows(tmp_path):
    from pipelines.ingest_assets import gx_check

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(con)
    cols = ", ".join(n for n, _ in __import__("ingest.raw_tables", fromlist=["table_columns"]).table_columns(TELEMETRY))
    good = "('D1', 'H1', {seq}, TIMESTAMP '2026-01-05 07:00:00', TIMESTAMP '2026-01-05 07:00:02', 'battery', NULL, 80, 'percent', -2, false, TIMESTAMP '2026-01-05 07:00:00', DATE '2026-01-05', {seq}, 'sha', now()::TIMESTAMP)"
    values = [good.format(seq=i) for i in range(1, 9)]
    values.append(good.format(seq=8))  # a duplicate natural key that slipped through
    values.append(good.format(seq=10).replace("'battery'", "'teleport'"))  # not an allowed kind
    values.append(good.format(seq=11).replace("'battery'", "'teleport'"))
    con.execute(f"INSERT INTO raw.telemetry ({cols}) VALUES {', '.join(values)}")
    result = gx_check(con, TELEMETRY, ["2026-01-05"])
    con.close()
    assert result.passed is False
    assert "expect_column_values_to_be_in_set(kind): 2 of 11 rows unexpected" in result.description
    assert "expect_compound_columns_to_be_unique(device_id,seq): 2 of 11 rows unexpected" in result.description
    assert result.metadata["rows_checked"].value == 11


def test_a_reading_outside_its_kinds_range_or_unit_fails_the_row_suite(tmp_path):
    """Rows that reached raw.telemetry past the loader (a loader bug, a hand-made fix): a battery
    at 250 percent and a temperature in percent fail the kind's own range and unit; the other
    readings, of the same kinds, pass."""
    from pipelines.ingest_assets import gx_check

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(con)
    cols = ", ".join(n for n, _ in __import__("ingest.raw_tables", fromlist=["table_columns"]).table_columns(TELEMETRY))
    row = "('D1', 'H1', {seq}, TIMESTAMP '2026-01-05 07:00:00', TIMESTAMP '2026-01-05 07:00:02', '{kind}', NULL, {value}, '{unit}', -2, false, TIMESTAMP '2026-01-05 07:00:00', DATE '2026-01-05', {seq}, 'sha', now()::TIMESTAMP)"
    values = [row.format(seq=i, kind="battery", value=80, unit="percent") for i in range(1, 5)]
    values += [row.format(seq=i, kind="temperature", value=21.5, unit="celsius") for i in range(5, 8)]
    values.append(row.format(seq=8, kind="battery", value=250, unit="percent"))
    values.append(row.format(seq=9, kind="temperature", value=40, unit="percent"))
    con.execute(f"INSERT INTO raw.telemetry ({cols}) VALUES {', '.join(values)}")
    result = gx_check(con, TELEMETRY, ["2026-01-05"])
    con.close()
    assert result.passed is False
    text = result.description
    assert "expect_column_values_to_be_between(value where kind = battery): 1 of 5 rows unexpected" in text, text
    assert "expect_column_values_to_be_in_set(unit where kind = temperature): 1 of 4 rows unexpected" in text, text
    assert "kind = temperature): " not in text.replace("(unit where kind = temperature): ", ""), text  # 40 °C is in range
    assert "where kind = door" not in text, text  # no door reading that day: nothing to fail


def test_gx_check_validates_many_dates_in_bounded_frames_and_adds_up(tmp_path, monkeypatch):
    """A full rebuild validates a year of rows: in frames of at most GX_ROWS_PER_FRAME rows
    (whole dates), whose counts add up to what one frame would have said."""
    import pipelines.ingest_assets as ia

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(con)
    cols = ", ".join(n for n, _ in __import__("ingest.raw_tables", fromlist=["table_columns"]).table_columns(TELEMETRY))
    row = "('D1', 'H1', {seq}, TIMESTAMP '{d} 07:00:00', TIMESTAMP '{d} 07:00:02', '{kind}', NULL, 80, 'percent', -2, false, TIMESTAMP '{d} 07:00:00', DATE '{d}', {seq}, 'sha', now()::TIMESTAMP)"
    values = [row.format(seq=10 * k + i, d=f"2026-01-0{k}", kind="teleport" if i == 0 else "battery")
              for k in (1, 2, 3) for i in range(4)]  # 3 dates × 4 rows, one bad kind per date
    con.execute(f"INSERT INTO raw.telemetry ({cols}) VALUES {', '.join(values)}")
    whole = ia.gx_check(con, TELEMETRY, ["2026-01-01", "2026-01-02", "2026-01-03"])
    monkeypatch.setattr(ia, "GX_ROWS_PER_FRAME", 5)  # one date (4 rows) per frame
    framed = ia.gx_check(con, TELEMETRY, ["2026-01-01", "2026-01-02", "2026-01-03"])
    con.close()
    assert whole.metadata["frames"].value == 1 and framed.metadata["frames"].value == 3
    assert framed.metadata["rows_checked"].value == whole.metadata["rows_checked"].value == 12
    assert framed.passed is whole.passed is False
    assert framed.description == whole.description
    assert "expect_column_values_to_be_in_set(kind): 3 of 12 rows unexpected" in framed.description


def test_quarantine_lists_the_newest_file_first_and_its_lines_in_order(home_dir):
    """Two delivery days loaded in one run (as a rebuild does): the later file's rows come
    first, though every row of the run has the same quarantined_at."""
    landing = home_dir / "landing"
    (landing / "reference" / "devices").mkdir(parents=True)
    (landing / "reference" / "devices" / "devices.csv").write_text(DEVICES_CSV)
    for day, seq in (("2026-01-05", 1), ("2026-01-06", 100)):
        rows = [json.dumps(reading(seq + i)) for i in range(40)] + ["{broken", json.dumps(reading(seq + 90, device_id="D404"))]
        (landing / "telemetry" / day).mkdir(parents=True)
        (landing / "telemetry" / day / f"t-{day}.jsonl").write_text("\n".join(rows) + "\n")
    con = duckdb.connect(str(home_dir / "warehouse.duckdb"))
    load_landing(con, landing)
    con.close()
    result = CliRunner().invoke(_app(), ["ingest", "quarantine", "--home", str(home_dir)])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "t-2026-01-0" in ln]
    assert [("01-06" in ln) for ln in lines] == [True, True, False, False], result.output
    assert "unparseable JSON" in lines[0] and "unknown device" in lines[1], result.output  # file order within a file


def test_quarantine_lists_the_newest_day_first_across_contracts(home_dir):
    """The loader handles source after source: a later day of pass scans handled before an
    earlier day of telemetry still comes first, and a late telemetry day after it."""
    from support.landing_files import SCAN_HEADER

    landing = home_dir / "landing"
    (landing / "reference" / "devices").mkdir(parents=True)
    (landing / "reference" / "devices" / "devices.csv").write_text(DEVICES_CSV + "V1,validator,,ST1,N1\n")
    scans = [f"S{i:03d},P{i},transit,ST1,V1,2026-01-07T08:{i % 60:02d}:00+01:00,accepted,,residency" for i in range(40)]
    (landing / "pass_scans" / "2026-01-07").mkdir(parents=True)
    (landing / "pass_scans" / "2026-01-07" / "scans.csv").write_text(SCAN_HEADER + "\n" + "\n".join([*scans, "S999,P9,transit"]) + "\n")
    con = duckdb.connect(str(home_dir / "warehouse.duckdb"))
    load_landing(con, landing)  # the pass scans of 01-07 first …
    for day, seq in (("2026-01-05", 1), ("2026-01-06", 100)):  # … then telemetry of two earlier days
        rows = [json.dumps(reading(seq + i)) for i in range(40)] + ["{broken"]
        (landing / "telemetry" / day).mkdir(parents=True)
        (landing / "telemetry" / day / f"t-{day}.jsonl").write_text("\n".join(rows) + "\n")
    load_landing(con, landing)
    con.close()
    result = CliRunner().invoke(_app(), ["ingest", "quarantine", "--home", str(home_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    files = [f for ln in result.output.splitlines() for f in ("scans.csv", "t-2026-01-06", "t-2026-01-05") if f in ln]
    assert files == ["scans.csv", "t-2026-01-06", "t-2026-01-05"], result.output
