"""The fault suite of a real landing zone and an unlucky night: each test breaks one thing the
way a real night would and asserts on rows, against the simulator's ground truth."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ingest.config import FAULT_ENV
from ingest.simulator import simulate
from pipelines.nightly import open_instance, run_nightly
from pipelines.run_lock import RunInProgress, home_run_lock
from pipelines.settings import Settings
from pipelines.stale_runs import live_slot_holders

ROOT = Path(__file__).resolve().parents[1]
EVENT_TABLES = ("telemetry", "pass_scans", "transactions", "clearing")
DAYS, SEED = 5, 19


def _raw_and_marts(home) -> dict[str, str]:
    """Every raw event table and mart as an order-free hash of its rows (without load times)."""
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        names = [f"raw.{t}" for t in EVENT_TABLES] + [
            f"marts.{r[0]}"
            for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1").fetchall()
        ]
        out = {}
        for name in names:
            cols = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {name})").fetchall() if not c.startswith("_")]
            select = ", ".join(f'"{c}"' for c in cols)
            out[name] = con.execute(f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR), '')) FROM (SELECT {select} FROM {name}) t").fetchone()[0]
        return out
    finally:
        con.close()


def _kill_cli_run_at(home: Path, point: str, marker: Path) -> None:
    """Start a real `civicflow run` on `home`, wait until it reaches fault `point`, SIGKILL it."""
    env = dict(os.environ, CIVICFLOW_HOME=str(home), PYTHONPATH=str(ROOT), **{FAULT_ENV: f"{point}:{marker}"})
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not marker.exists():
            assert child.poll() is None, f"the run ended before reaching {point}: {child.stderr.read().decode()[-2000:]}"
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> dict[str, str]:
    """The same city run once without a fault: what every recovered run must equal."""
    clean = Settings.from_env(env={}, home=tmp_path_factory.mktemp("clean") / "home")
    simulate(clean.home.landing, size="tiny", days=DAYS, seed=SEED)
    reference = run_nightly(clean)
    assert reference.success, reference.failure
    assert reference.recovered == []
    truth = pl.read_parquet(clean.home.ground_truth / "event_totals.parquet")
    ours = _raw_and_marts(clean.home)
    expected = dict(truth.select("contract", "valid_distinct").iter_rows())
    assert {t: int(ours[f"raw.{t}"].split(":")[0]) for t in EVENT_TABLES} == {t: expected[t] for t in EVENT_TABLES}
    return ours


@pytest.mark.slow
@pytest.mark.parametrize("point", ["in_batch", "in_dbt", "in_publish"])
def test_a_run_killed_during_ingest_dbt_or_publish_never_blocks_the_next_which_equals_a_clean_run(tmp_path: Path, point: str, clean_run):
    killed = Settings.from_env(env={}, home=tmp_path / "killed")
    simulate(killed.home.landing, size="tiny", days=DAYS, seed=SEED)

    _kill_cli_run_at(killed.home.root, point, tmp_path / "at-fault")
    with open_instance(killed) as instance:
        held = live_slot_holders(instance)
    assert len(held) == 1, "the killed run should still hold the warehouse slot"
    (dead,) = held
    if point == "in_publish":  # the kill left its real partial copy, and CURRENT never moved
        assert len(list(killed.home.published.glob(".warehouse-*.duckdb.tmp"))) == 1
        assert not (killed.home.published / "CURRENT").exists()
    else:  # what a killed publish leaves, planted
        (killed.home.published / ".warehouse-20260101T000000Z.duckdb.tmp").write_bytes(b"partial")
    # What a killed step that spilled leaves (DuckDB's temp_directory next to the file).
    killed.home.spill.mkdir(exist_ok=True)
    (killed.home.spill / "duckdb_temp_storage-0.tmp").write_bytes(b"spilled")

    after = run_nightly(killed)
    assert after.success, after.failure
    assert re.fullmatch(rf"freed the warehouse slot held by run {dead} \(its process \d+ is no longer alive\)", after.recovered[0])
    assert any("partial snapshot copy" in line for line in after.recovered)
    assert f"removed 1 DuckDB spill file(s) left in {killed.home.spill.name}" in after.recovered
    assert not list(killed.home.published.glob(".*.tmp"))
    assert not killed.home.spill.exists() or not any(killed.home.spill.iterdir())
    with open_instance(killed) as instance:
        assert not live_slot_holders(instance)
        assert instance.get_run_by_id(dead).is_failure
    assert _raw_and_marts(killed.home) == clean_run


def test_a_second_run_on_one_home_refuses_in_one_line_while_the_first_holds_it(tmp_path: Path):
    """A real second `civicflow run` process while this process holds the home."""
    home = tmp_path / "home"
    simulate(home / "landing", size="tiny", days=1, seed=SEED)
    env = dict(os.environ, CIVICFLOW_HOME=str(home), PYTHONPATH=str(ROOT))
    with home_run_lock(home):
        second = subprocess.run([sys.executable, "-m", "pipelines.cli", "run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 3
    lines = [line for line in second.stdout.splitlines() if line.strip()]
    assert lines == [f"another civicflow run (pid {os.getpid()}) is running on {home}: wait for it to finish"]
    assert not (home / "warehouse.duckdb").exists()  # it touched nothing


def test_the_home_lock_is_released_when_its_holder_dies(tmp_path: Path):
    ready = tmp_path / "locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from pipelines.run_lock import home_run_lock\n"
         "with home_run_lock(Path(sys.argv[1])):\n    Path(sys.argv[2]).write_text('x'); time.sleep(600)", str(tmp_path), str(ready)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.05)
        with pytest.raises(RunInProgress, match=f"pid {holder.pid}"):
            with home_run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with home_run_lock(tmp_path):  # taken at once: the dead holder's lock is gone
        pass



HOSTILE = ["readings [/] .jsonl", "a\\", "[bold]x[/bold]", "\\[/]", "[red]"]


def test_printed_names_and_reasons_are_never_read_as_markup(tmp_path: Path, monkeypatch):
    """A run report and `status` with file names and reasons full of markup print them as they are."""
    import io

    from rich.console import Console

    from pipelines.cli import main as cli_main
    from pipelines.nightly import RunReport
    from pipelines.status import Health, print_health

    settings = Settings.from_env(env={}, home=tmp_path / "home")
    refusals = "\n".join(f"telemetry/2026-01-02/{name}: {name} line 3: field 'x' {name}" for name in HOSTILE)
    report = RunReport(
        run_id="r1", success=False, seconds=1.0, failure="ingest: " + HOSTILE[0], log_path=HOSTILE[1], recovered=[HOSTILE[2]],
        ingest=[{"contract": "telemetry", "files_loaded": 1, "rows_loaded": 1, "rows_duplicate": 0, "rows_quarantined": 0,
                 "files_redelivered": 0, "files_refused": len(HOSTILE), "refusals": refusals}],
    )
    out = io.StringIO()
    monkeypatch.setattr(cli_main, "console", Console(file=out, width=400, color_system=None))  # for this test only: later CLI tests print to theirs
    cli_main.print_report(report, settings.home)
    printed = out.getvalue()
    for line in refusals.splitlines() + [report.failure, f"Run log (dbt output): {HOSTILE[1]}", HOSTILE[2]]:
        assert line in printed

    (settings.home.published).mkdir(parents=True)
    health = Health(
        snapshot=settings.home.published / "warehouse-[bold] x\\",
        refused_files=[(f"telemetry/2026-01-02/f{i}.jsonl", f"f{i}.jsonl: reason {n}") for i, n in enumerate(HOSTILE)],
        failed_checks=[{"asset": HOSTILE[4], "check": HOSTILE[0], "description": HOSTILE[1]}],
    )
    out = io.StringIO()
    print_health(Console(file=out, width=400, color_system=None), health, settings)
    printed = out.getvalue()
    assert "Published snapshot: warehouse-[bold] x\\\n" in printed
    for i, n in enumerate(HOSTILE):
        assert f"telemetry/2026-01-02/f{i}.jsonl: reason {n}\n" in printed
    assert f"{HOSTILE[4]} · {HOSTILE[0]}: {HOSTILE[1]}" in printed


# --------------------------------------------------------------------------- 4. the landing layout


def test_a_misplaced_path_is_refused_by_name_with_its_reason_and_the_good_files_load(tmp_path: Path):
    """Every way a landing zone can be laid out wrong, beside a good file: each path is in the
    manifest's refusals with its reason, nothing of them is loaded, the good file loads whole,
    and the next run records nothing again."""
    from support.landing_files import DEVICES_CSV, jsonl, put, reading

    from ingest.config import IngestConfig
    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    put(landing, "reference/devices/devices.csv", DEVICES_CSV.encode())
    good = jsonl([reading(i) for i in range(1, 11)])
    put(landing, "telemetry/2026-01-05/good.jsonl", good)
    misplaced = {
        "weather/2027-03-01/w.jsonl": None,  # reported as its top folder
        "Telemetry/2026-01-05/a.jsonl": None,
        "telemetry/2025-06-01/early.jsonl": None,
        "telemetry/2099-01-01/future.jsonl": None,
        "telemetry/2026-01-05/b.jsonl.gz": None,
        "telemetry/2026-01-05/sub/c.jsonl": None,
        "telemetry/2026-01-05/D.JSONL": None,
        "telemetry/2026-01-05/notes.txt": None,
        "telemetry/loose.jsonl": None,
        "reference/weather_stations/s.csv": None,
    }
    for rel in misplaced:
        put(landing, rel, good)
    (landing / "telemetry/2026-01-05/passwd.jsonl").symlink_to("/etc/passwd")
    expected = {
        "weather": "no contract named 'weather'",
        "Telemetry": "no contract named 'Telemetry' (did you mean telemetry?)",
        "telemetry/2025-06-01": "delivery day 2025-06-01 is before the partitions' first day 2026-01-01",
        "telemetry/2099-01-01": "delivery day 2099-01-01 is more than a day in the future",
        "telemetry/2026-01-05/b.jsonl.gz": "compressed files are not loaded: deliver it uncompressed",
        "telemetry/2026-01-05/sub": "a subfolder: files must lie directly in the folder",
        "telemetry/2026-01-05/D.JSONL": "extension in the wrong case",
        "telemetry/2026-01-05/notes.txt": "not a *.jsonl file of the telemetry contract",
        "telemetry/loose.jsonl": "a file outside a delivery-day folder",
        "reference/weather_stations": "no reference contract named 'weather_stations'",
        "telemetry/2026-01-05/passwd.jsonl": "a symbolic link: links are not followed",
    }
    config = IngestConfig(first_day=date(2026, 1, 1))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        out = load_landing(con, landing, config=config)
        refused = dict(con.execute("SELECT file_path, reason FROM raw._load_manifest WHERE status = 'refused'").fetchall())
        assert set(refused) == set(expected)
        for path, start in expected.items():
            assert refused[path].startswith(f"{Path(path).name}: {start}"), (path, refused[path])
        assert "root:" not in " ".join(refused.values())  # the link was never read
        contracts = dict(con.execute("SELECT file_path, contract FROM raw._load_manifest WHERE status = 'refused'").fetchall())
        assert contracts["weather"] == contracts["Telemetry"] == "landing" and contracts["telemetry/2099-01-01"] == "telemetry"
        (loaded,) = [o for o in out if o.status == "loaded" and o.contract == "telemetry"]
        assert (loaded.path, loaded.loaded) == ("telemetry/2026-01-05/good.jsonl", 10)
        assert con.execute("SELECT count(*), count(DISTINCT seq) FROM raw.telemetry").fetchone() == (10, 10)
        # The next run: the refusals are on record already, nothing new is written.
        before = con.execute("SELECT count(*) FROM raw._load_manifest").fetchone()[0]
        load_landing(con, landing, config=config)
        assert con.execute("SELECT count(*) FROM raw._load_manifest").fetchone()[0] == before
    finally:
        con.close()


def test_a_file_gone_or_unreadable_when_read_is_refused_and_the_others_of_its_batch_load(tmp_path: Path):
    from support.landing_files import jsonl, put, reading

    from ingest.contracts import TELEMETRY
    from ingest.read_ahead import prepare

    a = put(tmp_path, "a.jsonl", jsonl([reading(1)]))
    gone = tmp_path / "gone.jsonl"  # renamed away between the listing and the read
    b = put(tmp_path, "b.jsonl", jsonl([reading(2)]))
    pa, pg, pb = prepare(TELEMETRY, [a, gone, b], {"D1"}, 1 << 20)
    assert pg.sha == "" and "gone.jsonl: could not be read (No such file or directory)" in str(pg.error)
    assert [p.parts[0].good["seq"].to_list() for p in (pa, pb)] == [[1], [2]]
    assert (pa.size, pa.mtime_ns) == (a.stat().st_size, a.stat().st_mtime_ns)


def test_run_range_comes_from_known_sources_and_a_day_outside_the_partitions_is_refused_in_one_line(tmp_path: Path):
    """A real `civicflow run --date` before the partitions, and after the last delivered day."""
    from pipelines.delivery_days import landing_days

    home = tmp_path / "home"
    simulate(home / "landing", size="tiny", days=2, seed=SEED)
    for rel in ("weather/2027-03-01/x.jsonl", "telemetry/2025-06-01/x.jsonl", "telemetry/2099-01-01/x.jsonl"):
        (home / "landing" / rel).parent.mkdir(parents=True)
        (home / "landing" / rel).write_text("{}\n")
    settings = Settings.from_env(env={}, home=home)
    assert landing_days(settings.home, settings.schedule.start_date) == (date(2026, 1, 1), date(2026, 1, 2))
    env = dict(os.environ, CIVICFLOW_HOME=str(home), PYTHONPATH=str(ROOT))
    for day in ("2025-06-01", "2026-01-03"):
        out = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--date", day], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr == ""
        assert out.stdout.strip().splitlines() == [
            f"{day} is not a partition: partitions run from 2026-01-01 (CIVICFLOW_START_DATE) to 2026-01-02, the last delivered day"
        ]
    assert not (home / "warehouse.duckdb").exists()  # nothing ran
    # Refused before Dagster is even imported: -X importtime lists every module the command loaded.
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipelines.cli", "run", "--date", "2025-06-01"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert out.returncode == 2 and "pipelines" in imported and "dagster" not in imported and "dbt" not in imported, sorted(imported)


# --------------------------------------------------------------------------- 2. a file still being written


def _appender(path: Path, rows: list[dict], go: threading.Event | None = None, step: threading.Event | None = None) -> None:
    """A real writer: appends one JSON line per write, flushed, as an upload would."""
    with path.open("a") as fh:
        for row in rows:
            if go is not None:  # one line each time the reader says so
                go.wait()
                go.clear()
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            if step is not None:
                step.set()


def test_a_file_written_while_nights_run_is_loaded_whole_by_what_was_read(tmp_path: Path):
    """A writer thread appends to a file while the loader runs night after night: every load
    records the size, mtime and checksum of the same bytes, so the rows appended after a
    load make a new version, and in the end every row is loaded exactly once."""
    from support.landing_files import DEVICES_CSV, put, reading

    from ingest.config import IngestConfig
    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    put(landing, "reference/devices/devices.csv", DEVICES_CSV.encode())
    live = put(landing, "telemetry/2026-01-05/live.jsonl", b"")
    rows = [reading(i) for i in range(1, 401)]
    writer = threading.Thread(target=_appender, args=(live, rows))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        nights = 0
        writer.start()
        while writer.is_alive() or nights == 0:
            load_landing(con, landing, config=IngestConfig(batch_bytes=1))
            nights += 1
        writer.join()
        load_landing(con, landing)  # the night after the upload finished
        final = live.read_bytes()
        assert con.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM raw.telemetry").fetchone() == (400, 400, 1, 400)
        assert con.execute("SELECT count(*) FROM raw._quarantine").fetchone()[0] == 0
        loads = con.execute(
            "SELECT file_sha256, size_bytes, rows_loaded, rows_duplicate, rows_in_file FROM raw._load_manifest "
            "WHERE status = 'loaded' ORDER BY started_at"
        ).fetchall()[1:]  # the devices snapshot first
        for sha, size, loaded, dup, lines in loads:
            # size and checksum of one read: the file's first `size` bytes as they are now
            assert hashlib.sha256(final[:size]).hexdigest() == sha
            assert lines == final[:size].count(b"\n") and loaded + dup == lines
        assert loads[-1][1] == len(final)
        assert sum(r[2] for r in loads) == 400  # each row loaded once, by the first version holding it
        refusals = [r for (r,) in con.execute("SELECT reason FROM raw._load_manifest WHERE status = 'refused'").fetchall()]
        assert all("still being written" in r or "truncated" in r or "empty file" in r for r in refusals), refusals
    finally:
        con.close()


def test_a_file_that_changes_while_it_is_read_is_skipped_as_still_being_written(tmp_path: Path, monkeypatch):
    """A big file (read in chunks) grows between its checksum and its rows: refused as still
    being written, nothing of it loaded; the next night loads it whole."""
    from support.landing_files import DEVICES_CSV, jsonl, put, reading

    import ingest.read_ahead as read_ahead
    from ingest.config import IngestConfig
    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    put(landing, "reference/devices/devices.csv", DEVICES_CSV.encode())
    live = put(landing, "telemetry/2026-01-05/live.jsonl", jsonl([reading(i) for i in range(1, 201)]))
    go, step = threading.Event(), threading.Event()
    writer = threading.Thread(target=_appender, args=(live, [reading(201)], go, step))
    writer.start()
    real_hash = read_ahead.sha256_of

    def hash_then_let_the_writer_write(path):
        sha = real_hash(path)
        if path == live and not step.is_set():
            go.set()  # the writer appends one line now, after the checksum was taken
            step.wait()
        return sha

    monkeypatch.setattr(read_ahead, "sha256_of", hash_then_let_the_writer_write)
    config = IngestConfig(chunk_bytes=4096)  # the file is bigger: checksum first, rows read in chunks
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        (o,) = [o for o in load_landing(con, landing, config=config) if o.contract == "telemetry"]
        writer.join()
        assert o.status == "refused" and o.reason.startswith("live.jsonl: still being written")
        assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == 0
        (o,) = [o for o in load_landing(con, landing, config=config) if o.contract == "telemetry"]
        assert (o.status, o.loaded) == ("loaded", 201)
        assert con.execute("SELECT size_bytes FROM raw._load_manifest WHERE status = 'loaded' AND contract = 'telemetry'").fetchone()[0] == live.stat().st_size
    finally:
        con.close()


# --------------------------------------------------------------------------- 3. types at ingest


def _city_reference(landing: Path) -> None:
    """Devices, hubs and categories of a two-device city (what telemetry is checked against)."""
    from support.landing_files import DEVICES_CSV, put

    put(landing, "reference/devices/devices.csv", DEVICES_CSV.encode())
    put(landing, "reference/hubs/hubs.csv", b"hub_id,neighbourhood_id,name,address,lat,lon\nH1,N1,Hub one,Kerkstraat 1,52.37,4.9\n")
    put(landing, "reference/categories/categories.csv", b"category,name,under_cost,over_cost\ngrocery,Grocery,6.5,2.8\nparcels,Parcels,4.0,1.2\n")


# line -> (the row, the field and reason it must be quarantined with)
BAD_KINDS = {
    3: ({"category": 7}, "category", "a JSON number, not a string"),
    5: ({"device_id": ["D1"]}, "device_id", "a JSON array, not a string"),
    7: ({"hub_id": {"id": "H1"}}, "hub_id", "a JSON object, not a string"),
    9: ({"kind": True}, "kind", "a JSON boolean, not a string"),
    11: ({"category": "widgets"}, "category", "unknown category (not in the reference data)"),
    13: ({"hub_id": "H999"}, "hub_id", "unknown hub (not in the reference data)"),
    15: ({"device_id": "D404"}, "device_id", "unknown device"),
    17: ({"value": "NaN"}, "value", "not a finite number"),
    19: ({"value": "Infinity"}, "value", "not a finite number"),
    21: ({"device_time": "9999-01-05T08:00:00+01:00", "received_at": "9999-01-05T07:00:02Z"}, "device_time", "more than 1 day(s) in the future"),
    23: ({"device_time": "1969-12-31T23:59:59+01:00"}, "device_time", "before 2020-01-01, the earliest plausible time"),
}


def _bad_kinds_file(first_seq: int, n: int = 400) -> tuple[bytes, int]:
    """`n` good readings with one row of every bad kind at its BAD_KINDS line; the good count."""
    from support.landing_files import jsonl, reading

    rows = [reading(first_seq + i) for i in range(n)]
    for line, (over, _, _) in BAD_KINDS.items():
        rows[line - 1] = dict(rows[line - 1], **over)
    return jsonl(rows), n - len(BAD_KINDS)


def test_one_bad_value_of_each_kind_is_quarantined_with_field_and_reason_and_the_rest_loads(tmp_path: Path):
    from support.landing_files import put

    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    _city_reference(landing)
    data, good = _bad_kinds_file(1)
    put(landing, "telemetry/2026-01-05/a.jsonl", data)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        (o,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
        assert (o.status, o.loaded, o.quarantined, o.duplicate) == ("loaded", good, len(BAD_KINDS), 0)
        got = con.execute("SELECT line, field, reason, raw_text FROM raw._quarantine ORDER BY line").fetchall()
        assert [g[:2] for g in got] == [(line, f) for line, (_, f, _) in BAD_KINDS.items()]
        for (line, _, reason, raw), (_, _, why) in zip(got, BAD_KINDS.values()):
            assert reason.startswith(why), (line, reason)
            assert json.loads(raw)["seq"] == line  # the row's own text, kept
        bad_seqs = set(BAD_KINDS)
        loaded = {s for (s,) in con.execute("SELECT seq FROM raw.telemetry").fetchall()}
        assert loaded == set(range(1, 401)) - bad_seqs
        assert con.execute("SELECT min(event_date), max(event_date), count(DISTINCT category), count(DISTINCT hub_id) FROM raw.telemetry").fetchone() == (
            date(2026, 1, 5), date(2026, 1, 5), 1, 1)
    finally:
        con.close()


# --------------------------------------------------------------------------- 6. reference values


@pytest.mark.parametrize("bad, reason", [
    ("NaN", "under_cost: not a finite number"), ("inf", "under_cost: not a finite number"),
    ("-1", "under_cost: below the minimum 0"), ("seven", "under_cost: not a valid number"),
])
def test_a_reference_snapshot_with_a_non_finite_or_out_of_range_value_is_refused_whole_keeping_the_last_good(tmp_path: Path, bad: str, reason: str):
    from support.landing_files import put

    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    _city_reference(landing)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        load_landing(con, landing)
        good = con.execute("SELECT * EXCLUDE (_loaded_at) FROM raw.categories ORDER BY category").fetchall()
        assert [g[:4] for g in good] == [("grocery", "Grocery", 6.5, 2.8), ("parcels", "Parcels", 4.0, 1.2)]
        put(landing, "reference/categories/categories-2.csv", f"category,name,under_cost,over_cost\ngrocery,Grocery,{bad},2.8\nfresh,Fresh,3.0,1.0\n".encode())
        (o,) = [o for o in load_landing(con, landing) if o.contract == "categories" and o.status != "skipped"]
        assert o.status == "refused"
        assert o.reason.startswith("categories-2.csv: 1 of 2 rows rejected") and o.reason.endswith(reason), o.reason
        assert con.execute("SELECT * EXCLUDE (_loaded_at) FROM raw.categories ORDER BY category").fetchall() == good
        assert con.execute("SELECT count(*) FROM raw._quarantine WHERE contract = 'categories'").fetchone()[0] == 0
    finally:
        con.close()


@pytest.mark.slow
def test_a_night_with_one_bad_value_of_each_kind_and_a_misplaced_landing_succeeds_and_so_does_the_next(tmp_path: Path):
    """A real night on a simulated city with a hostile file (one bad row of every kind) and a
    misplaced landing: the night succeeds, its summary and `status` name every misplaced path,
    raw holds the city's valid rows plus the hostile file's good ones, and the next night
    (a new day delivered) succeeds too."""
    from pipelines.status import gather

    settings = Settings.from_env(env={}, home=tmp_path / "home")
    landing = settings.home.landing
    simulate(landing, size="tiny", days=2, seed=SEED)
    truth = dict(pl.read_parquet(settings.home.ground_truth / "event_totals.parquet").select("contract", "valid_distinct").iter_rows())
    template = next(
        row for f in sorted((landing / "telemetry" / "2026-01-02").glob("*.jsonl")) for line in f.read_text().splitlines()
        if line.startswith("{") and (row := json.loads(line)).get("kind") == "locker_pickup" and isinstance(row.get("seq"), int)
    )
    rows = [dict(template, seq=900_000_000 + i) for i in range(1, 401)]
    for line, (over, _, _) in BAD_KINDS.items():
        rows[line - 1] = dict(rows[line - 1], **over)
    (landing / "telemetry" / "2026-01-02" / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for rel in ("weather/2026-01-02/w.jsonl", "telemetry/2026-01-02/late.jsonl.gz"):
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / rel).write_bytes(b"{}\n")

    first = run_nightly(settings)
    assert first.success, first.failure
    refusals = "\n".join(r["refusals"] or "" for r in first.ingest)
    assert "weather: no contract named 'weather'" in refusals
    assert "telemetry/2026-01-02/late.jsonl.gz: compressed files are not loaded" in refusals
    health = gather(settings)
    assert {p for p, _ in health.refused_files} >= {"weather", "telemetry/2026-01-02/late.jsonl.gz"}

    con = duckdb.connect(str(settings.home.warehouse), read_only=True)
    try:
        got = con.execute("SELECT line, field FROM raw._quarantine WHERE file_path LIKE '%hostile.jsonl' ORDER BY line").fetchall()
        assert got == [(line, f) for line, (_, f, _) in BAD_KINDS.items()]
        assert con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0] == truth["telemetry"] + 400 - len(BAD_KINDS)
        assert con.execute("SELECT count(*) FROM raw.telemetry WHERE seq >= 900000000").fetchone()[0] == 400 - len(BAD_KINDS)
    finally:
        con.close()

    simulate(landing, size="tiny", days=1, seed=SEED, append=True)
    second = run_nightly(settings)
    assert second.success, second.failure
    assert second.ingest and all(not r["refusals"] for r in second.ingest)  # the misplaced paths are on record already


# --------------------------------------------------------------------------- 5. parsing as a reader would


def test_files_are_parsed_as_a_csv_or_json_reader_would(tmp_path: Path):
    """Quoted newlines, BOMs in both formats, trailing blank lines and fractional seconds load;
    a JSON object repeating a key is quarantined with the key named, never read silently."""
    from support.landing_files import SCAN_HEADER, jsonl, put, reading

    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    _city_reference(landing)
    scans = [
        "S00001,P1,transit,H1,D1,2026-01-05T08:00:00+01:00,accepted,,residency",
        'S00002,P1,transit,H1,D1,2026-01-05T08:00:00.250+01:00,rejected,"expired\nat the gate",residency',
        "S00003,P1,transit,H1,D1,2026-01-05T08:00:01+01:00,accepted,,",
    ]
    put(landing, "pass_scans/2026-01-05/s.csv", ("\ufeff" + SCAN_HEADER + "\n" + "\n".join(scans) + "\n\n\n").encode())
    rows = [reading(i, received_at="2026-01-05T07:00:02.123456Z") for i in range(1, 40)]
    data = jsonl(rows)[:-1] + b'\n{"device_id": "D1", "seq": 40, "seq": 41}\n\n'
    put(landing, "telemetry/2026-01-05/t.jsonl", b"\xef\xbb\xbf" + data)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        out = {o.contract: o for o in load_landing(con, landing) if o.status != "skipped" and not CONTRACTS_REF(o.contract)}
        assert (out["pass_scans"].status, out["pass_scans"].rows_in_file, out["pass_scans"].loaded, out["pass_scans"].quarantined) == ("loaded", 3, 3, 0)
        assert con.execute("SELECT reason, scanned_at FROM raw.pass_scans WHERE scan_id = 'S00002'").fetchone() == (
            "expired\nat the gate", datetime(2026, 1, 5, 7, 0, 0, 250000))
        assert con.execute("SELECT count(*) FROM raw.pass_scans WHERE scan_id = 'S00003'").fetchone()[0] == 1
        t = out["telemetry"]
        assert (t.status, t.rows_in_file, t.loaded, t.quarantined) == ("loaded", 40, 39, 1)
        assert con.execute("SELECT min(received_at) FROM raw.telemetry").fetchone()[0] == datetime(2026, 1, 5, 7, 0, 2, 123456)
        assert con.execute("SELECT line, field, reason FROM raw._quarantine").fetchall() == [
            (40, None, "duplicate key 'seq' in the JSON object (which value is meant is unknown)")]
    finally:
        con.close()


def CONTRACTS_REF(name: str) -> bool:
    from ingest.contracts import CONTRACTS

    return CONTRACTS[name].reference


def test_a_changed_value_under_an_existing_natural_key_is_quarantined_with_both_values(tmp_path: Path):
    """The same key again with the same values is a duplicate; with other values it is
    quarantined naming the field and both values (in one file, and across runs), never dropped."""
    from support.landing_files import jsonl, put, reading

    from ingest.loader import load_landing

    landing = tmp_path / "landing"
    _city_reference(landing)
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl([reading(i) for i in range(1, 41)] + [reading(3, value=9)]))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        (a,) = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
        assert (a.rows_in_file, a.loaded, a.duplicate, a.quarantined) == (41, 40, 0, 1)
        put(landing, "telemetry/2026-01-06/b.jsonl", jsonl([reading(7, category="parcels"), reading(8)] + [reading(i) for i in range(41, 79)]))
        (b,) = [o for o in load_landing(con, landing) if o.contract == "telemetry" and o.status != "skipped"]
        assert (b.rows_in_file, b.loaded, b.duplicate, b.quarantined) == (40, 38, 1, 1)
        got = con.execute("SELECT file_path, line, field, reason FROM raw._quarantine ORDER BY file_path").fetchall()
        assert got == [
            ("telemetry/2026-01-05/a.jsonl", 41, "value", "changed value under an existing natural key (device_id, seq): value was 2.0, now 9.0; the row loaded first is kept"),
            ("telemetry/2026-01-06/b.jsonl", 1, "category", "changed value under an existing natural key (device_id, seq): category was grocery, now parcels; the row loaded first is kept"),
        ]
        assert con.execute("SELECT value FROM raw.telemetry WHERE seq = 3").fetchall() == [(2.0,)]
        assert con.execute("SELECT count(*), count(DISTINCT seq) FROM raw.telemetry").fetchone() == (78, 78)
    finally:
        con.close()
