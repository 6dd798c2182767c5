"""The day-level expectations fail on a day that is wrong as a whole though every row of it
is contract-valid, and pass on the simulator's normal days: checked through `gx_check`, the
blocking asset check each ingest run yields."""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from ingest.contracts import PASS_SCANS, TELEMETRY, TRANSACTIONS
from ingest.loader import load_landing
from ingest.simulator.run import simulate

DAYS = 40
START = date(2026, 1, 1)
LAST = START + timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """40 days of the tiny city, loaded (faults included, as the simulator makes them)."""
    base = tmp_path_factory.mktemp("batch")
    simulate(base / "landing", size="tiny", days=DAYS, start=START, seed=3)
    con = duckdb.connect(str(base / "warehouse.duckdb"))
    load_landing(con, base / "landing")
    con.close()
    return base / "warehouse.duckdb"


@pytest.fixture
def warehouse(simulated: Path, tmp_path: Path):
    """A copy of the loaded warehouse, for a test to spoil."""
    copy = tmp_path / "w.duckdb"
    shutil.copy(simulated, copy)
    con = duckdb.connect(str(copy))
    yield con
    con.close()


def _check(con, contract, day: date = LAST, run_day: date = LAST):
    from pipelines.ingest_assets import gx_check

    return gx_check(con, contract, [day.isoformat()], run_day=run_day)


def _failed(result) -> str:
    assert result.passed is False, result.description
    return result.description


def test_normal_days_pass_every_expectation(warehouse):
    for contract in (TELEMETRY, PASS_SCANS, TRANSACTIONS):
        for back in range(0, 12, 3):
            day = LAST - timedelta(days=back)
            result = _check(warehouse, contract, day, run_day=day)
            assert result.passed, f"{contract.name} {day}: {result.description}"
    assert _check(warehouse, TELEMETRY).metadata["expectations"].value > 15  # row suite + the day's


def test_a_day_with_a_tenth_of_its_rows_fails_the_volume_expectation(warehouse):
    warehouse.execute(
        "DELETE FROM raw.telemetry WHERE event_date = ? AND (device_id, seq) NOT IN "
        "(SELECT (device_id, seq) FROM raw.telemetry WHERE event_date = ? ORDER BY device_id, seq LIMIT "
        "(SELECT count(*) // 10 FROM raw.telemetry WHERE event_date = ?))", [LAST, LAST, LAST])
    text = _failed(_check(warehouse, TELEMETRY))
    found = re.search(rf"expect_column_values_to_be_between\(rows_vs_28_day_median\): 1 of 1 days unexpected \({LAST}: ([0-9.]+)\)", text)
    assert found and float(found.group(1)) < 0.3, text  # a tenth of the day's rows: far under the band's 0.3


def test_amounts_all_at_the_contract_maximum_fail_the_mean_and_median(warehouse):
    warehouse.execute("UPDATE raw.transactions SET amount_cents = ? WHERE event_date = ?", [TRANSACTIONS.get("amount_cents").max, LAST])
    text = _failed(_check(warehouse, TRANSACTIONS))
    assert f"(mean_amount_cents): 1 of 1 days unexpected ({LAST}: 100,000)" in text
    assert "(median_amount_cents): 1 of 1 days unexpected" in text
    assert "in_set" not in text and "values_to_be_between(amount_cents)" not in text  # every row is valid


def test_a_reading_kind_gone_for_a_day_fails_its_share(warehouse):
    warehouse.execute("DELETE FROM raw.telemetry WHERE event_date = ? AND kind = 'battery'", [LAST])
    text = _failed(_check(warehouse, TELEMETRY))
    assert f"(share_kind_battery): 1 of 1 days unexpected ({LAST}: 0)" in text
    assert "share_kind_door" not in text and "rows_vs_28_day_median" not in text


def test_a_scan_result_mix_turned_to_rejections_fails_its_share(warehouse):
    warehouse.execute("UPDATE raw.pass_scans SET result = 'rejected', reason = 'expired' WHERE event_date = ?", [LAST])
    assert "(share_result_accepted): 1 of 1 days unexpected" in _failed(_check(warehouse, PASS_SCANS))


def test_a_day_too_small_to_judge_is_not_judged_by_its_shares(warehouse):
    """A day of a dozen scans, all event passes (a small city's event day): no share is judged,
    while the same mix on the full day fails."""
    from ingest.partition_profile import DAILY_STATS_MIN_ROWS

    warehouse.execute("UPDATE raw.pass_scans SET pass_type = 'event' WHERE event_date = ?", [LAST])
    assert "(share_pass_type_transit): 1 of 1 days unexpected" in _failed(_check(warehouse, PASS_SCANS))
    warehouse.execute(
        "DELETE FROM raw.pass_scans WHERE event_date = ? AND scan_id NOT IN "
        "(SELECT scan_id FROM raw.pass_scans WHERE event_date = ? ORDER BY scan_id LIMIT ?)", [LAST, LAST, DAILY_STATS_MIN_ROWS - 8])
    result = _check(warehouse, PASS_SCANS)
    assert "share_" not in (result.description or "")


def test_a_source_whose_latest_events_are_days_old_fails_freshness(warehouse):
    """A run five days after the source's last events; a late file alone, a day after, is on time."""
    old = LAST - timedelta(days=10)
    run_day = LAST + timedelta(days=5)
    text = _failed(_check(warehouse, PASS_SCANS, day=old, run_day=run_day))
    assert f"expect_column_max_to_be_between(latest_event_date): observed {LAST}, expected min_value {run_day - timedelta(days=1)}" in text
    assert _check(warehouse, PASS_SCANS, day=old, run_day=LAST + timedelta(days=1)).passed


@pytest.mark.slow
def test_a_nightly_ingest_of_a_bad_day_fails_its_blocking_check_in_the_run(simulated, tmp_path):
    """Through Dagster: the next day's settlement file holds valid transactions, every one at
    the contract's maximum. The run loads them, its blocking check fails and says why."""
    import dagster as dg
    from support.landing_files import jsonl, put

    from ingest.config import IngestConfig
    from pipelines.ingest_assets import SOURCES, build_ingest_asset, raw_key
    from pipelines.partitions import daily_partitions
    from pipelines.resources import WarehouseResource

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(simulated, home / "warehouse.duckdb")
    landing = simulated.parent / "landing"
    day = LAST + timedelta(days=1)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    terminal = con.execute("SELECT device_id FROM raw.devices WHERE device_type = 'payment_terminal' LIMIT 1").fetchone()[0]
    con.close()
    rows = [{"txn_id": f"TX-BAD-{i:03d}", "device_id": terminal, "pass_id": "P1", "amount_cents": 100_000,
             "currency": "EUR", "txn_time": f"{day}T{8 + i // 60:02d}:{i % 60:02d}:00+01:00"} for i in range(30)]
    put(landing, f"transactions/{day}/transactions_{day}.jsonl", jsonl(rows))
    try:
        asset = build_ingest_asset("settlement", SOURCES["settlement"], landing, daily_partitions(START, day), IngestConfig())
        result = dg.materialize(
            [asset], partition_key=day.isoformat(), resources={"warehouse": WarehouseResource(home=str(home))},
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        )
    finally:
        (landing / "transactions" / day.isoformat() / f"transactions_{day}.jsonl").unlink()
    checks = {e.asset_key: e for e in result.get_asset_check_evaluations()}
    bad = checks[raw_key("transactions")]
    assert bad.passed is False and bad.severity == dg.AssetCheckSeverity.ERROR
    assert f"(mean_amount_cents): 1 of 1 days unexpected ({day}: 100,000)" in bad.description
    assert checks[raw_key("clearing")].passed  # nothing new there
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.transactions WHERE event_date = ?", [day]).fetchone()[0] == 30
    con.close()
