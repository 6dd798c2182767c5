"""Replaying the quarantine after a contract fix: the rows that now pass land once, a second
replay loads nothing, the rows that still fail stay with the current reason."""

from __future__ import annotations

import dataclasses
from datetime import date

import duckdb
import pytest
from support.landing_files import DEVICES_CSV, SCAN_HEADER, jsonl, put
from typer.testing import CliRunner

from ingest.contracts import CONTRACTS, TRANSACTIONS
from ingest.loader import load_landing
from ingest.replay import replay_quarantine


def txn(n: int, amount: int, day: int = 5) -> dict:
    return {"txn_id": f"TX-{n:04d}", "device_id": "D1", "pass_id": "P1", "amount_cents": amount,
            "currency": "EUR", "txn_time": f"2026-01-{day:02d}T09:00:00+01:00"}


def relaxed_amounts(max_cents: int) -> dict:
    """The contracts with the transactions' amount maximum raised (the fix of a too-tight rule)."""
    fields = tuple(dataclasses.replace(f, max=max_cents) if f.name == "amount_cents" else f for f in TRANSACTIONS.fields)
    return {**CONTRACTS, "transactions": dataclasses.replace(TRANSACTIONS, fields=fields)}


@pytest.fixture
def quarantined(landing, con):
    """200 good transactions a day on two days; over the maximum: TX-9001 (on both days:
    the same row delivered twice) and TX-9002; below the minimum: TX-9003."""
    for day in (5, 6):
        rows = [txn(day * 1000 + i, 350, day) for i in range(200)] + [txn(9001, 150_000, 5)]  # re-sent as it was
        if day == 5:
            rows += [txn(9002, 120_000, day), txn(9003, -5, day)]
        put(landing, f"transactions/2026-01-{day:02d}/t.jsonl", jsonl(rows))
    load_landing(con, landing)
    assert con.execute("SELECT count(*) FROM raw._quarantine WHERE contract = 'transactions'").fetchone()[0] == 4
    return con


def _txn_count(con, txn_id: str) -> int:
    return con.execute("SELECT count(*) FROM raw.transactions WHERE txn_id = ?", [txn_id]).fetchone()[0]


def test_replay_loads_what_now_passes_once_and_keeps_the_rest(quarantined):
    con = quarantined
    before = con.execute("SELECT count(*) FROM raw.transactions").fetchone()[0]
    dry = replay_quarantine(con, source="settlement", dry_run=True, contracts=relaxed_amounts(200_000))
    assert [(s.contract, s.loaded) for s in dry] == [("transactions", 2), ("clearing", 0)]
    assert con.execute("SELECT count(*) FROM raw.transactions").fetchone()[0] == before  # a dry run changes nothing
    assert con.execute("SELECT count(*) FROM raw._quarantine").fetchone()[0] == 4

    [first, _] = replay_quarantine(con, source="settlement", contracts=relaxed_amounts(200_000))
    assert (first.revalidated, first.loaded, first.already_loaded, first.still_quarantined) == (4, 2, 1, 1)
    assert _txn_count(con, "TX-9001") == _txn_count(con, "TX-9002") == 1 and _txn_count(con, "TX-9003") == 0
    loaded = con.execute("SELECT amount_cents, event_date::VARCHAR, _line FROM raw.transactions WHERE txn_id = 'TX-9002'").fetchone()
    assert loaded == (120_000, "2026-01-05", 202)  # its file's line, its own partition
    left = con.execute("SELECT file_path, line, field, reason FROM raw._quarantine").fetchall()
    assert left == [("transactions/2026-01-05/t.jsonl", 203, "amount_cents", "below the minimum 1")]
    manifest = dict(con.execute(
        "SELECT file_path, (rows_loaded, rows_quarantined) FROM raw._load_manifest WHERE contract = 'transactions'").fetchall())
    assert manifest["transactions/2026-01-05/t.jsonl"] == (202, 1) and manifest["transactions/2026-01-06/t.jsonl"] == (200, 0)
    assert first.delivery_days == {date(2026, 1, 5)}

    [again, _] = replay_quarantine(con, source="settlement", contracts=relaxed_amounts(200_000))
    assert (again.revalidated, again.loaded, again.still_quarantined) == (1, 0, 1)
    assert con.execute("SELECT count(*) FROM raw.transactions").fetchone()[0] == before + 2


def test_a_row_still_bad_for_another_reason_gets_the_new_one(quarantined):
    """A fix that moves the bound without covering the row: still quarantined, reason updated."""
    [s, _] = replay_quarantine(quarantined, source="settlement", contracts=relaxed_amounts(130_000))
    assert (s.loaded, s.reasons_changed) == (1, 2)
    reasons = quarantined.execute("SELECT DISTINCT reason FROM raw._quarantine WHERE field = 'amount_cents' ORDER BY 1").fetchall()
    assert reasons == [("above the maximum 130000",), ("below the minimum 1",)]


def test_unknown_source_is_refused(quarantined):
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        replay_quarantine(quarantined, source="nope")


def test_replay_command_loads_scans_once_the_device_is_registered(home_dir):
    """CSV rows from a device the registry lacked; the registry's next snapshot names it; the
    command replays them, and says so per source."""
    from pipelines.cli import app

    landing = home_dir / "landing"
    put(landing, "reference/devices/devices.csv", DEVICES_CSV.encode())
    scans = [f"S{i:03d},P1,transit,H1,D1,2026-01-05T08:{i % 60:02d}:00+01:00,accepted,," for i in range(60)]
    scans += ["S900,P2,transit,H1,D9,2026-01-05T09:00:00+01:00,accepted,,"]
    put(landing, "pass_scans/2026-01-05/s.csv", (SCAN_HEADER + "\n" + "\n".join(scans) + "\n").encode())
    con = duckdb.connect(str(home_dir / "warehouse.duckdb"))
    load_landing(con, landing)
    put(landing, "reference/devices/devices-2.csv", (DEVICES_CSV + "D9,validator,,H1,N1\n").encode())
    load_landing(con, landing)
    assert con.execute("SELECT reason FROM raw._quarantine").fetchall() == [("unknown device",)]
    con.close()
    run = CliRunner().invoke(app, ["ingest", "replay-quarantine", "--source", "pass_scans", "--home", str(home_dir)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "pass_scans" in run.output and "civicflow run --date 2026-01-05" in run.output
    row = [ln for ln in run.output.splitlines() if ln.strip().startswith("pass_scans") or "│ pass_scans" in ln][0]
    assert [c.strip() for c in row.strip("│ ").split("│")][1:] == ["1", "1", "0", "0", "0"], run.output
    again = CliRunner().invoke(app, ["ingest", "replay-quarantine", "--home", str(home_dir)], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "0 row(s) loaded." in again.output, again.output
    con = duckdb.connect(str(home_dir / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.pass_scans WHERE scan_id = 'S900'").fetchone()[0] == 1
    con.close()
    bad = CliRunner().invoke(app, ["ingest", "replay-quarantine", "--source", "nope", "--home", str(home_dir)])
    assert bad.exit_code == 2 and "unknown source" in bad.output and "Traceback" not in bad.output


def test_a_row_whose_key_was_loaded_since_with_other_values_stays_as_a_conflict(quarantined, landing):
    """TX-9002 came again, valid, in a later file: the replayed row is not the one to keep."""
    put(landing, "transactions/2026-01-07/t.jsonl", jsonl([txn(7000 + i, 350, 7) for i in range(100)] + [txn(9002, 500, 5)]))
    load_landing(quarantined, landing)
    [s, _] = replay_quarantine(quarantined, source="settlement", contracts=relaxed_amounts(200_000))
    assert (s.loaded, s.already_loaded) == (1, 1)  # TX-9001 loaded, its re-sent copy a duplicate
    assert quarantined.execute("SELECT amount_cents FROM raw.transactions WHERE txn_id = 'TX-9002'").fetchall() == [(500,)]
    (reason,) = quarantined.execute("SELECT reason FROM raw._quarantine WHERE raw_text LIKE '%TX-9002%'").fetchone()
    assert reason.startswith("changed value under an existing natural key (txn_id): amount_cents was 500, now 120000")
    [again, _] = replay_quarantine(quarantined, source="settlement", contracts=relaxed_amounts(200_000))
    assert again.loaded == 0 and again.revalidated == 1  # the conflict is not replayed again
