"""A small hand-made raw warehouse for the dbt tests.

Creates the `raw.*` tables exactly as the loader writes them (contract fields typed, plus
`event_ts`, `event_date`, lineage columns, the manifest and quarantine tables), filled with
a few rows whose expected marts are easy to compute by hand. It is a test helper only: the
models read `raw.*` through `sources.yml` and know nothing of this module.

Expected values (local dates, Europe/Amsterdam, June = UTC+2) are in `EXPECTED`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ingest.contracts import CITY_TZ, EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract

SQL_TYPES = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMP", "date": "DATE"}
LOADED_AT = "2024-06-05 23:00:00"

NEIGHBOURHOODS = [
    ("N1", "Centrum", 12000, 52.37, 4.89),
    ("N2", "Noord", 8000, 52.39, 4.92),
    ("N3", "Zuid", 5000, 52.34, 4.87),  # no hub: not in the demand grid
]
HUBS = [("H1", "N1", "Centrum Dam", "Damstraat 4", 52.3712, 4.8921), ("H2", "N1", "Centrum Oost", "Oostplein 12", 52.3689, 4.8950),
        ("H3", "N2", "Noord Plein", "Noordplein 1", 52.3915, 4.9188)]
CATEGORIES = [("groceries", "Groceries", 4.0, 1.0), ("parcels", "Parcels", 6.0, 0.5), ("pharmacy", "Pharmacy", 9.0, 2.0)]
HUB_CAPACITY = [(h, c, cap) for h, *_ in HUBS for c, cap in (("groceries", 40), ("parcels", 30), ("pharmacy", 10))]
DEVICES = [
    ("L1", "locker", "H1", "H1", "N1"),
    ("L2", "locker", "H2", "H2", "N1"),
    ("L3", "locker", "H3", "H3", "N2"),
    ("V1", "validator", None, "ST1", "N3"),
    ("P1", "payment_terminal", "H1", "H1", "N1"),
]
EVENTS = [  # UTC start/end
    ("E1", "Summer Festival", "festival", "N1", "2024-06-02 08:00:00", "2024-06-02 20:00:00", 5000),
    ("E2", "Late Concert", "concert", "N2", "2024-06-02 18:00:00", "2024-06-02 23:30:00", 2000),  # ends 01:30 local on 06-03
    ("E3", "Farmers Market", "market", "N1", "2024-06-04 06:00:00", "2024-06-04 12:00:00", 300),
    ("E4", "Derby", "sports", "N1", "2024-06-02 16:00:00", "2024-06-02 18:00:00", 1000),
]
PASS_ONBOARDING = [
    ("PA1", "transit", "N1", 1980, "2024-05-01 08:00:00", "2024-05-01 09:00:00", "2024-05-01 09:05:00", None),
    ("PA2", "transit", "N1", 1992, "2024-05-02 08:00:00", "2024-05-03 09:00:00", None, None),
    ("PA3", "locker", "N2", 1975, "2024-05-03 08:00:00", None, None, None),
    ("PA4", "event", "N2", 2001, "2024-05-04 08:00:00", "2024-05-04 10:00:00", "2024-05-04 10:00:00", "2024-05-05 10:00:00"),
]
# telemetry: device, hub, seq, device_time(UTC), received_at(UTC), kind, category, value, unit
TELEMETRY = [
    ("L1", "H1", 1, "2024-06-01 08:00:00", "2024-06-01 08:00:02", "locker_pickup", "groceries", 3.0, "item"),
    ("L1", "H1", 2, "2024-06-01 09:00:00", "2024-06-01 09:00:01", "locker_pickup", "parcels", 2.0, "item"),
    ("L2", "H2", 1, "2024-06-01 10:00:00", "2024-06-01 10:00:01", "locker_pickup", "groceries", 4.0, "item"),
    ("L3", "H3", 1, "2024-06-01 22:30:00", "2024-06-01 22:30:01", "locker_pickup", "groceries", 5.0, "item"),  # 00:30 local 06-02
    ("L1", "H1", 3, "2024-06-02 12:00:00", "2024-06-02 12:00:01", "locker_pickup", "groceries", 6.0, "item"),
    ("L1", "H1", 4, "2024-06-02 06:00:00", "2024-06-02 06:00:01", "locker_deposit", "groceries", 10.0, "item"),
    ("L1", "H1", 5, "2024-06-02 13:05:00", "2024-06-02 13:05:01", "occupancy", None, 0.4, "ratio"),
    ("L2", "H2", 2, "2024-06-03 10:00:00", "2024-06-03 10:00:01", "heartbeat", None, 0.0, "none"),
    ("L3", "H3", 2, "2030-01-01 00:00:00", "2024-06-04 10:00:00", "locker_pickup", "parcels", 1.0, "item"),  # skewed clock
    ("L2", "H2", 3, "2024-06-05 07:00:00", "2024-06-05 07:00:01", "locker_pickup", "pharmacy", 2.0, "item"),
    ("L1", "H1", 6, "2024-06-05 08:00:00", "2024-06-05 08:00:01", "locker_deposit", "parcels", 3.0, "item"),
    ("L3", "H3", 3, "2024-06-03 07:00:00", "2024-06-03 07:00:01", "locker_deposit", "groceries", 8.0, "item"),
    ("L3", "H3", 4, "2024-06-03 07:10:00", "2024-06-03 07:10:01", "occupancy", None, 0.9, "ratio"),
]
PASS_SCANS = [
    ("S1", "PA1", "transit", "ST1", "V1", "2024-06-01 07:00:00", "accepted", None, "residency;payment"),
    ("S2", "PA1", "transit", "ST1", "V1", "2024-06-02 07:00:00", "accepted", None, "residency"),
    ("S3", "PA2", "transit", "ST1", "V1", "2024-06-02 07:30:00", "rejected", "expired", None),
    ("S4", "PA4", "event", "H1", "L1", "2024-06-02 09:00:00", "accepted", None, None),
]
TRANSACTIONS = [  # txn_id, device, pass, amount, currency, txn_time (UTC)
    ("T1", "P1", "PA1", 1000, "EUR", "2024-06-01 10:00:00"),
    ("T2", "P1", "PA1", 500, "EUR", "2024-06-01 11:00:00"),
    ("T3", "P1", "PA2", 700, "EUR", "2024-06-01 12:00:00"),
    ("T4", "P1", "PA4", 300, "EUR", "2024-06-02 09:00:00"),
    ("T5", "P1", "PA4", 800, "EUR", "2024-06-02 10:00:00"),
    ("T6", "P1", "PA1", 250, "EUR", "2024-06-02 11:00:00"),
    ("T7", "P1", "PA2", 150, "EUR", "2024-06-05 06:00:00"),
]
CLEARING = [  # batch, line_no, txn_id, amount, settled_at (UTC)
    ("B1", 1, "T1", 1000, "2024-06-01 20:00:00"),
    ("B1", 2, "T2", 450, "2024-06-01 20:00:00"),
    ("B2", 1, "T4", 300, "2024-06-02 20:00:00"),
    ("B2", 2, "T4", 300, "2024-06-02 20:00:00"),
    ("B2", 3, "T5", 700, "2024-06-02 20:00:00"),
    ("B2", 4, "T5", 900, "2024-06-02 20:00:00"),
    ("B3", 1, "T6", 250, "2024-06-04 12:00:00"),
    ("B3", 2, "T99", 400, "2024-06-04 12:00:00"),
]
CLEARING_BATCHES = [
    ("B1", 2, 1450, "2024-06-01 20:00:00"),
    ("B2", 4, 2200, "2024-06-02 20:00:00"),
    ("B3", 2, 650, "2024-06-04 12:00:00"),
]

EXPECTED = {
    "demand_dates": ["2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04", "2024-06-05"],
    "demand_neighbourhoods": ["N1", "N2"],
    "categories": ["groceries", "parcels", "pharmacy"],
    "demand_rows": 2 * 3 * 5,
    "total_units": 23.0,
    "units": {  # (neighbourhood, category, date) -> units; every other cell is 0
        ("N1", "groceries", "2024-06-01"): 7.0,
        ("N1", "parcels", "2024-06-01"): 2.0,
        ("N2", "groceries", "2024-06-02"): 5.0,
        ("N1", "groceries", "2024-06-02"): 6.0,
        ("N2", "parcels", "2024-06-04"): 1.0,
        ("N1", "pharmacy", "2024-06-05"): 2.0,
    },
    "event_attendance": {  # (neighbourhood, date) -> attendance; every other is 0 / not an event day
        ("N1", "2024-06-02"): 6000,
        ("N2", "2024-06-02"): 2000,
        ("N2", "2024-06-03"): 2000,
        ("N1", "2024-06-04"): 300,
    },
    "reconciliation": {  # txn_id or batch:line -> class
        "T1": "matched",
        "T2": "amount_variance",
        "T3": "unmatched_transaction",
        "T4": "matched",
        "B2:2": "duplicate",
        "T5": "ambiguous",
        "B2:3": "ambiguous",
        "B2:4": "ambiguous",
        "T6": "matched",
        "B3:2": "unmatched_settlement",
        "T7": "unmatched_transaction",
    },
    # T6 settled after 49 h; T3 (never settled) and T5 (ambiguous, so unsettled) older than 24 h at as_of
    "breached": {"T3", "T5", "T6"},
    "txn_total_cents": 3700,
    "settled_total_cents": 4300,
}


def _columns(contract: Contract) -> list[tuple[str, str]]:
    return [(f.name, SQL_TYPES[f.dtype]) for f in contract.fields]


def _create(con: duckdb.DuckDBPyConnection, table: str, cols: list[tuple[str, str]]) -> None:
    con.execute(f"create or replace table {table} ({', '.join(f'{n} {t}' for n, t in cols)})")


def _insert(con: duckdb.DuckDBPyConnection, table: str, names: list[str], rows: list[tuple]) -> None:
    if rows:
        marks = ", ".join("?" for _ in names)
        con.executemany(f"insert into {table} ({', '.join(names)}) values ({marks})", [list(r) for r in rows])


def make_raw_fixture(db_path: str | Path, *, telemetry: list[tuple] | None = None) -> Path:
    """Create (or replace) the raw schema in `db_path` with the hand-made rows above."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "telemetry": TELEMETRY if telemetry is None else telemetry,
        "pass_scans": PASS_SCANS,
        "transactions": TRANSACTIONS,
        "clearing": CLEARING,
        "neighbourhoods": NEIGHBOURHOODS,
        "hubs": HUBS,
        "hub_capacity": HUB_CAPACITY,
        "devices": DEVICES,
        "categories": CATEGORIES,
        "events": EVENTS,
        "pass_onboarding": PASS_ONBOARDING,
    }
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create schema if not exists raw")
        for contract in REFERENCE_CONTRACTS:
            cols = _columns(contract) + [("_file_sha256", "VARCHAR"), ("_loaded_at", "TIMESTAMP")]
            table = f"raw.{contract.name}"
            _create(con, table, cols)
            _insert(con, table, list(contract.field_names), data[contract.name])
            con.execute(f"update {table} set _file_sha256 = 'sha-{contract.name}', _loaded_at = timestamp '{LOADED_AT}'")
        for contract in EVENT_CONTRACTS:
            extra = [("event_ts", "TIMESTAMP"), ("event_date", "DATE")]
            if contract.name == "telemetry":
                extra += [("clock_skew_s", "DOUBLE"), ("is_clock_skewed", "BOOLEAN")]
            extra += [("_file_sha256", "VARCHAR"), ("_line", "BIGINT"), ("_loaded_at", "TIMESTAMP")]
            table = f"raw.{contract.name}"
            _create(con, table, _columns(contract) + extra)
            rows = data[contract.name]
            _insert(con, table, list(contract.field_names) + ["_line"], [r + (i + 1,) for i, r in enumerate(rows)])
            if contract.name == "telemetry":
                con.execute(
                    f"""update {table} set
                        clock_skew_s = epoch(device_time) - epoch(received_at),
                        is_clock_skewed = abs(epoch(device_time) - epoch(received_at)) > 300"""
                )
                con.execute(f"update {table} set event_ts = case when is_clock_skewed then received_at else device_time end")
            else:
                con.execute(f"update {table} set event_ts = {contract.event_time}")
            con.execute(
                f"""update {table} set
                    event_date = cast(timezone('{CITY_TZ}', timezone('UTC', event_ts)) as date),
                    _file_sha256 = 'sha-{contract.name}', _loaded_at = timestamp '{LOADED_AT}'"""
            )
        _create(
            con,
            "raw.clearing_batches",
            [("batch_id", "VARCHAR"), ("line_count", "BIGINT"), ("total_cents", "BIGINT"), ("cleared_at", "TIMESTAMP"),
             ("_file_sha256", "VARCHAR"), ("_loaded_at", "TIMESTAMP")],
        )
        _insert(con, "raw.clearing_batches", ["batch_id", "line_count", "total_cents", "cleared_at"], CLEARING_BATCHES)
        con.execute(f"update raw.clearing_batches set _file_sha256 = 'sha-clearing', _loaded_at = timestamp '{LOADED_AT}'")
        con.execute(
            """create or replace table raw._load_manifest (
                file_path VARCHAR, file_sha256 VARCHAR, source VARCHAR, contract VARCHAR, status VARCHAR,
                rows_loaded BIGINT, rows_duplicate BIGINT, rows_quarantined BIGINT, loaded_at TIMESTAMP,
                affected_dates VARCHAR)"""
        )
        con.execute(
            """create or replace table raw._quarantine (
                file_path VARCHAR, file_sha256 VARCHAR, line BIGINT, field VARCHAR, reason VARCHAR, raw_text VARCHAR)"""
        )
    finally:
        con.close()
    return db_path


def add_late_telemetry(db_path: str | Path, rows: list[tuple]) -> list[str]:
    """Append late telemetry rows (as the loader would) and return their local dates."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = 'UTC'")
        start = con.execute("select coalesce(max(_line), 0) from raw.telemetry").fetchone()[0]
        names = [f.name for f in next(c for c in EVENT_CONTRACTS if c.name == "telemetry").fields] + ["_line"]
        _insert(con, "raw.telemetry", names, [r + (start + i + 1,) for i, r in enumerate(rows)])
        con.execute(
            f"""update raw.telemetry set
                clock_skew_s = epoch(device_time) - epoch(received_at),
                is_clock_skewed = abs(epoch(device_time) - epoch(received_at)) > 300,
                _file_sha256 = 'sha-late', _loaded_at = timestamp '2024-06-06 01:00:00'
            where _line > {start}"""
        )
        con.execute(
            f"""update raw.telemetry set
                event_ts = case when is_clock_skewed then received_at else device_time end where _line > {start}"""
        )
        con.execute(
            f"""update raw.telemetry set event_date = cast(timezone('{CITY_TZ}', timezone('UTC', event_ts)) as date)
            where _line > {start}"""
        )
        dates = con.execute(f"select distinct strftime(event_date, '%Y-%m-%d') from raw.telemetry where _line > {start} order by 1").fetchall()
    finally:
        con.close()
    return [d[0] for d in dates]


def replace_settlement(db_path: str | Path, transactions: list[tuple], clearing: list[tuple]) -> None:
    """Replace raw transactions, clearing lines and batch headers (rows shaped like TRANSACTIONS /
    CLEARING above, inserted in the given order); headers are derived from the lines."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = 'UTC'")
        for table, contract_name, rows in (("raw.transactions", "transactions", transactions), ("raw.clearing", "clearing", clearing)):
            contract = next(c for c in EVENT_CONTRACTS if c.name == contract_name)
            con.execute(f"delete from {table}")
            _insert(con, table, list(contract.field_names) + ["_line"], [r + (i + 1,) for i, r in enumerate(rows)])
            con.execute(
                f"""update {table} set event_ts = {contract.event_time},
                    event_date = cast(timezone('{CITY_TZ}', timezone('UTC', {contract.event_time})) as date),
                    _file_sha256 = 'sha-prop', _loaded_at = timestamp '{LOADED_AT}'"""
            )
        con.execute("delete from raw.clearing_batches")
        con.execute(
            f"""insert into raw.clearing_batches
                select batch_id, count(*), sum(amount_cents), max(settled_at), 'sha-prop', timestamp '{LOADED_AT}'
                from raw.clearing group by batch_id"""
        )
    finally:
        con.close()
