"""Speed work on the loader must not change what lands: these tests pin it.

Small files of one source are validated several at a time (`validate_files`) and committed
several to a transaction (`IngestConfig.batch_bytes`); a file bigger than a chunk still has its own
transaction. Whatever the grouping: one manifest row and one checksum per file, the same
counts, the same rows, and a crash leaves nothing of any file in the open transaction.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from polars.testing import assert_frame_equal
from support.crash import run_and_kill  # noqa: E402
from support.landing_files import SCAN_HEADER, jsonl, put, reading  # noqa: E402

from ingest import decode, framing, validate
from ingest.config import IngestConfig
from ingest.contracts import CLEARING, PASS_SCANS, TELEMETRY
from ingest.loader import load_landing
from ingest.parsed import FileRefused, ParseResult


def count(con, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


# --------------------------------------------------------------------------- several files, one pass


EDGE_FILES = {  # contract name -> files
    TELEMETRY.name: [
        jsonl([reading(i) for i in range(1, 30)]),
        jsonl([reading(1), "{cut", dict(reading(3), seq="x"), dict(reading(4), firmware="2"), "[1]", "", reading(1)]),
        jsonl([reading(i) for i in range(1, 5)])[:-20],  # truncated: last line cut, no line end
        b"",
        b"\n \n",
        jsonl([reading(9)]) + b'{"device_id": "D1\xff"}\n',  # invalid UTF-8 on line 2
        jsonl([reading(i, device="D9") for i in range(1, 4)]),  # unknown device: every row bad
        jsonl([reading(5)]).replace(b"\n", b"\r\n"),
    ],
    PASS_SCANS.name: [
        (SCAN_HEADER + "\nS1,P1,transit,H1,D1,2026-01-05T08:00:00+01:00,accepted,,residency\n").encode(),
        (SCAN_HEADER + '\nS2,P1,transit,H1,D1,2026-01-05T08:00:00+01:00,rejected,"no, funds",\nS3,x\n').encode(),
        (SCAN_HEADER + "\n").encode(),  # header only
        b"scan_id,pass_id\nS1,P1\n",  # columns changed
    ],
    CLEARING.name: [
        jsonl([{"record": "header", "batch_id": "B1", "line_count": 1, "total_cents": 5, "cleared_at": "2026-01-06T02:00:00Z"},
               {"record": "line", "batch_id": "B1", "line_no": 1, "txn_id": "T1", "amount_cents": 5, "settled_at": "2026-01-06T02:00:00Z"}]),
        jsonl([{"record": "header", "batch_id": "B2", "line_count": 2, "total_cents": 5, "cleared_at": "2026-01-06T02:00:00Z"}]),
        jsonl(["not a header"]),
    ],
}


@pytest.mark.parametrize("contract", [TELEMETRY, PASS_SCANS, CLEARING], ids=lambda c: c.name)
def test_validating_files_together_gives_what_each_file_gives_alone(tmp_path, contract):
    paths = [put(tmp_path, f"f{n}.data", data) for n, data in enumerate(EDGE_FILES[contract.name])]
    known = {"D1", "D2"} if "device_id" in contract.field_names else None
    together = validate.validate_files(contract, [(p, p.read_bytes()) for p in paths], known)
    assert len(together) == len(paths)
    for path, got in zip(paths, together):
        try:
            (alone,) = list(validate.validate_chunks(contract, path, known))
        except FileRefused as exc:
            assert isinstance(got, FileRefused) and str(got) == str(exc)
            continue
        assert isinstance(got, ParseResult), f"{path.name}: {got}"
        if alone.good.width:
            assert_frame_equal(got.good, alone.good)
        else:
            assert got.good.height == 0
        assert_frame_equal(got.bad, alone.bad)
        assert (got.lines, got.header, got.extra_keys) == (alone.lines, alone.header, alone.extra_keys)


def _decoded_as_string_maps(frame, names: tuple[str, ...]):
    """The plain decoder (every line into a string map): the oracle for the fast path."""
    known = "[" + ", ".join(f"'{n}'" for n in names) + "]"
    picks = ", ".join(f"m['{n}'] AS \"{n}\"" for n in names)
    present = " + ".join(f"map_contains(m, '{n}')::INT" for n in names)
    lines = frame.select("raw").to_arrow()  # noqa: F841 — read by name below
    return duckdb.connect().execute(
        f"""SELECT {picks}, m IS NOT NULL AS __object,
                   CASE WHEN cardinality(m) > ({present}) THEN list_filter(map_keys(m), k -> NOT list_contains({known}, k)) END AS __extra
            FROM (SELECT try(json_transform(raw, '"MAP(VARCHAR, VARCHAR)"')) AS m FROM lines)"""
    ).pl()


def test_json_fast_path_decodes_what_the_string_map_decodes():
    usual = reading(1)
    lines = [
        usual,
        {k: usual[k] for k in reversed(list(usual))},  # the contract's keys in another order
        {k: v for k, v in usual.items() if k != "category"},  # a key missing
        dict(usual, firmware="2.1"),  # an extra key
        {**{k: v for k, v in usual.items() if k != "unit"}, "units": "item"},  # renamed: same key count
        dict(usual, seq=3.0, value="2", hub_id={"id": "H1"}, kind=True, category=None),
        "[1, 2]", '"text"', "{}", "null", "{cut", "", "  ",
    ]
    frame, _ = framing.frame_bytes(jsonl(lines * 50))  # several vectors' worth, every case mixed
    got = decode.fields_from_json(frame, TELEMETRY.field_names).drop("line", "raw", "__dupkey")  # repeated keys: tests/test_ingest_robustness.py
    assert_frame_equal(got, _decoded_as_string_maps(frame, TELEMETRY.field_names))


def test_framing_keeps_every_line_and_its_number():
    frame, ends = framing.frame_bytes(b"a\r\n\n \xff\nlast", first_line=7)
    assert not ends
    assert frame.rows() == [(7, "a\r"), (8, ""), (9, " \ufffd"), (10, "last")]
    assert framing.frame_bytes(b"x\n")[0].rows() == [(1, "x")]


# --------------------------------------------------------------------------- several files, one transaction


def telemetry_run(landing: Path) -> None:
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl([reading(i) for i in range(1, 31)] + ["{bad"]))
    # b and d repeat keys with the same values (duplicates; other values would be quarantined)
    put(landing, "telemetry/2026-01-05/b.jsonl", jsonl([reading(i, day=5 if i <= 30 else 6) for i in range(26, 41)] + [reading(40, day=6)]))
    put(landing, "telemetry/2026-01-06/c.jsonl", jsonl([reading(1), dict(reading(2), unit="litre")] * 3))  # over the reject ratio
    put(landing, "telemetry/2026-01-06/d.jsonl", jsonl([reading(i, day=6 if i <= 40 else 4) for i in range(39, 47)]))
    put(landing, "telemetry/2026-01-07/a-again.jsonl", (landing / "telemetry/2026-01-05/a.jsonl").read_bytes())


def what_landed(con) -> tuple:
    manifest = con.execute(
        "SELECT file_path, status, rows_in_file, rows_loaded, rows_duplicate, rows_quarantined, "
        "affected_dates::VARCHAR[], file_sha256 FROM raw._load_manifest WHERE contract = 'telemetry' ORDER BY started_at"
    ).fetchall()
    rows = con.execute("SELECT device_id, seq, _line, event_date, _file_sha256 FROM raw.telemetry ORDER BY seq").fetchall()
    bad = con.execute("SELECT file_path, line, reason FROM raw._quarantine ORDER BY file_path, line").fetchall()
    return manifest, rows, bad


@pytest.mark.parametrize("batch_bytes", [1, 1 << 30], ids=["a transaction per file", "one batch"])
def test_batching_changes_nothing_that_lands(landing, con, batch_bytes):
    telemetry_run(landing)
    load_landing(con, landing, config=IngestConfig(batch_bytes=batch_bytes))
    manifest, rows, bad = what_landed(con)
    by_file = {m[0].split("/")[-1]: m for m in manifest}
    assert list(by_file) == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "a-again.jsonl"]
    # a: 30 rows + 1 bad; b: seq 26-30 already there, 31-40 new, 40 twice; c refused; d: 39-40 there, 41-46 new
    assert by_file["a.jsonl"][1:6] == ("loaded", 31, 30, 0, 1)
    assert by_file["b.jsonl"][1:6] == ("loaded", 16, 10, 6, 0)
    assert by_file["c.jsonl"][1:3] == ("refused", 6)
    assert by_file["d.jsonl"][1:6] == ("loaded", 8, 6, 2, 0)
    assert by_file["a-again.jsonl"][1] == "duplicate_file"
    assert [by_file[f][6] for f in ("a.jsonl", "b.jsonl", "d.jsonl")] == [["2026-01-05"], ["2026-01-06"], ["2026-01-04"]]
    assert [r[1] for r in rows] == list(range(1, 47))
    line, sha = {r[1]: r[2] for r in rows}, {r[1]: r[4] for r in rows}
    assert sha[35] == by_file["b.jsonl"][7] and sha[45] == by_file["d.jsonl"][7] and sha[1] == by_file["a.jsonl"][7]
    assert line[40] == 15  # the first line with a key wins (b's line 15, not 16)
    assert bad == [("telemetry/2026-01-05/a.jsonl", 31, "unparseable JSON line")]  # nothing of the refused c


def test_small_big_small_files_keep_their_order_and_each_its_transaction(landing, con):
    config = IngestConfig(chunk_bytes=4096)  # b is bigger than a chunk: its own transaction
    put(landing, "telemetry/2026-01-05/a.jsonl", jsonl([reading(i) for i in range(1, 6)]))
    put(landing, "telemetry/2026-01-05/b.jsonl", jsonl([reading(i) for i in range(3, 60)]))
    put(landing, "telemetry/2026-01-05/c.jsonl", jsonl([reading(i) for i in range(55, 62)]))
    out = [o for o in load_landing(con, landing, config=config) if o.contract == "telemetry"]
    assert [(o.path.split("/")[-1], o.loaded, o.duplicate) for o in out] == [("a.jsonl", 5, 0), ("b.jsonl", 54, 3), ("c.jsonl", 2, 5)]
    assert count(con, "SELECT count(*) FROM raw.telemetry") == 61


# --------------------------------------------------------------------------- crashes

@pytest.mark.slow
def test_sigkill_inside_a_batch_of_files_then_rerun_loads_each_file_exactly_once(landing, tmp_path):
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as c:
        load_landing(c, landing)  # the device reference first: the kill lands in the telemetry batch
    for day in range(5, 9):
        rows = [reading(i, day=day) for i in range(day * 100, day * 100 + 50)] + [reading(5 * 100)]  # a retry of day 5's first row
        put(landing, f"telemetry/2026-01-{day:02d}/gw.jsonl", jsonl(rows + ["{cut"]))
    run_and_kill(landing, db, "in_batch", tmp_path / "in_batch")

    con = duckdb.connect(str(db))
    try:
        # Every file of the batch was written, none committed: nothing of any of them is left.
        assert count(con, "SELECT count(*) FROM raw.telemetry") == 0
        assert count(con, "SELECT count(*) FROM raw._quarantine") == 0
        assert count(con, "SELECT count(*) FROM raw._load_manifest WHERE contract = 'telemetry'") == 0
        out = [o for o in load_landing(con, landing) if o.contract == "telemetry"]
        assert [(o.status, o.loaded, o.duplicate, o.quarantined) for o in out] == [("loaded", 50, 1, 1)] + [("loaded", 50, 1, 1)] * 3
        assert count(con, "SELECT count(*) FROM raw.telemetry") == 200
        assert count(con, "SELECT count(*) FROM raw._quarantine") == 4
        assert count(con, "SELECT count(DISTINCT file_sha256) FROM raw._load_manifest WHERE contract = 'telemetry'") == 4
        assert [o.status for o in load_landing(con, landing) if o.contract == "telemetry"] == ["skipped"] * 4
    finally:
        con.close()


def test_rows_of_a_batch_are_the_rows_a_file_at_a_time_gives(landing, tmp_path):
    """Same landing zone, two grouping extremes: the raw table is identical, row for row."""
    for day in range(5, 8):
        put(landing, f"telemetry/2026-01-{day:02d}/gw.jsonl", jsonl([reading(i, day=day, device=("D1", "D2")[i % 2]) for i in range(1, 40)]))
    tables = []
    for n, batch_bytes in enumerate((1, 1 << 30)):
        with duckdb.connect(str(tmp_path / f"w{n}.duckdb")) as c:
            load_landing(c, landing, config=IngestConfig(batch_bytes=batch_bytes))
            tables.append(c.execute("SELECT * EXCLUDE (_loaded_at) FROM raw.telemetry ORDER BY device_id, seq").pl())
    assert_frame_equal(tables[0], tables[1])
