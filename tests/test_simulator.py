"""The city simulator: determinism, append, and its ground truth checked against the files.

The oracle here is deliberately independent of the simulator's code: it reads the landing
zone with `json` / `csv` line by line, applies the contracts and the event-time rule, and
compares what it finds with the ground-truth Parquet files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from ingest.contracts import (
    CITY_TZ,
    CLEARING,
    CONTRACTS,
    ENTITLEMENTS,
    EVENT_CONTRACTS,
    PASS_SCANS,
    READING_KINDS,
    REFERENCE_CONTRACTS,
    STOCK_KINDS,
    TELEMETRY,
    TRANSACTIONS,
    Contract,
    Field,
)
from ingest.simulator import FAULT_KINDS, SIZES, simulate

TZ = ZoneInfo(CITY_TZ)
DAYS = 28
START = date(2026, 1, 1)
BAD_KINDS = ("corrupt_line", "wrong_type", "unknown_device")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sim")
    summary = simulate(root / "landing", size="tiny", days=DAYS, start=START, seed=7)
    return root / "landing", root / "ground_truth", summary


@pytest.fixture(scope="module")
def truth(sim) -> dict[str, pl.DataFrame]:
    _, truth_dir, _ = sim
    return {p.stem: pl.read_parquet(p) for p in truth_dir.glob("*.parquet")}


@pytest.fixture(scope="module")
def refs(sim) -> dict[str, list[dict]]:
    out, _, _ = sim
    return {c.name: list(csv.DictReader((out / "reference" / c.name / f"{c.name}.csv").open())) for c in REFERENCE_CONTRACTS}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "state.json"
    }


def _event_files(out: Path, contract: Contract) -> list[Path]:
    return sorted((out / contract.name).glob(f"*/{contract.filename_glob}"))


def _rel(out: Path, p: Path) -> str:
    return str(p.relative_to(out))


# ----------------------------------------------------------------------------- oracle


def _ts(v, utc: bool) -> datetime:
    if not isinstance(v, str):
        raise ValueError("not a string")
    if utc and not v.endswith("Z"):
        raise ValueError("UTC time without Z")
    if not utc and not re.search(r"[+-]\d\d:\d\d$", v):
        raise ValueError("local time without offset")
    t = datetime.fromisoformat(v)
    if t.tzinfo is None:
        raise ValueError("naive time")
    return t


UTC_FIELDS = {"received_at", "settled_at"}


def _check_field(f: Field, v) -> str | None:
    if v is None or v == "":
        return f"{f.name} missing" if f.required else None
    try:
        if f.dtype == "int":
            if isinstance(v, bool) or isinstance(v, float):
                return f"{f.name} not int"
            v = int(v)
        elif f.dtype == "float":
            if isinstance(v, bool):
                return f"{f.name} not float"
            v = float(v)
        elif f.dtype == "timestamp":
            _ts(v, f.name in UTC_FIELDS)
            return None
        elif not isinstance(v, str):
            return f"{f.name} not str"
    except (TypeError, ValueError):
        return f"{f.name} wrong type"
    if f.allowed is not None and v not in f.allowed:
        return f"{f.name} not allowed"
    if f.min is not None and v < f.min:
        return f"{f.name} below min"
    if f.max is not None and v > f.max:
        return f"{f.name} above max"
    return None


def _check_row(contract: Contract, row: dict, refs: dict[str, list[dict]]) -> str | None:
    """Why a parsed row breaks its contract, or None. Independent of the simulator's code."""
    for f in contract.fields:
        why = _check_field(f, row.get(f.name))
        if why:
            return why
    devices = {r["device_id"] for r in refs["devices"]}
    if "device_id" in contract.field_names and row["device_id"] not in devices:
        return "unknown device"
    if contract is TELEMETRY:
        unit, lo, hi = READING_KINDS[row["kind"]]
        if row["unit"] != unit or not lo <= float(row["value"]) <= hi:
            return "unit or value does not match kind"
        cats = {r["category"] for r in refs["categories"]}
        if (row["kind"] in STOCK_KINDS) != (row["category"] is not None) or (row["category"] and row["category"] not in cats):
            return "category"
        if row["hub_id"] not in {r["hub_id"] for r in refs["hubs"]}:
            return "unknown hub"
    if contract is PASS_SCANS:
        if row["pass_id"] not in {r["pass_id"] for r in refs["pass_onboarding"]}:
            return "unknown pass"
        if (row["result"] == "rejected") != bool(row["reason"]):
            return "reason"
        if row["entitlements"] and not set(row["entitlements"].split(";")) <= set(ENTITLEMENTS):
            return "entitlements"
    return None


def _rows(contract: Contract, path: Path):
    """(line number, raw line, parsed row or None) for every data line of a file."""
    raw = path.read_bytes().decode()
    lines = raw.split("\n")
    if lines[-1] == "":
        lines.pop()
    if contract.file_format == "csv":
        header = lines[0].split(",")
        assert header == list(contract.field_names)
        for n, line in enumerate(lines[1:], start=2):
            values = next(csv.reader([line]))
            yield n, line, (dict(zip(header, [v if v != "" else None for v in values])) if len(values) == len(header) else None)
    else:
        first = 2 if contract is CLEARING else 1
        for n, line in enumerate(lines[first - 1 :], start=first):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            yield n, line, obj if isinstance(obj, dict) else None


def _bad_lines(truth: dict[str, pl.DataFrame]) -> dict[str, set[int]]:
    bad: dict[str, set[int]] = defaultdict(set)
    for file, line in truth["faults"].filter(pl.col("kind").is_in(BAD_KINDS)).select("file", "line").iter_rows():
        bad[file].add(line)
    return bad


def _copies(truth: dict[str, pl.DataFrame]) -> tuple[dict[str, str], set[str]]:
    """{resent copy: original} and the refused (truncated) files, from the truth."""
    f = truth["faults"]
    resent = {
        file: re.search(r"copy of (\S+)", detail).group(1)
        for file, detail in f.filter(pl.col("kind") == "duplicate_file").select("file", "detail").iter_rows()
    }
    refused = set(f.filter(pl.col("kind") == "truncated_file")["file"].to_list())
    return resent, refused


def _loadable(out: Path, contract: Contract, truth) -> list[tuple[str, Path, set[int]]]:
    """Files a correct loader loads, each with the lines it must reject."""
    resent, refused = _copies(truth)
    bad = _bad_lines(truth)
    files = []
    for p in _event_files(out, contract):
        rel = _rel(out, p)
        if rel in refused:
            continue
        files.append((rel, p, bad[resent.get(rel, rel)]))
    return files


def _event_time(row: dict) -> datetime:
    """The loader's rule: device clock unless it is further than the threshold from the gateway's."""
    dev, rec = _ts(row["device_time"], False), _ts(row["received_at"], True)
    skewed = abs((dev - rec).total_seconds()) > TELEMETRY.extra["skew_threshold_s"]
    return rec if skewed else dev


# ----------------------------------------------------------------------------- tests


def test_sizes_are_ordered_and_large_is_large():
    assert list(SIZES) == ["tiny", "small", "medium", "large"]
    assert SIZES["large"].neighbourhoods >= 200
    assert SIZES["tiny"].neighbourhoods <= 5 and SIZES["tiny"].hubs <= 8


def test_same_arguments_give_identical_files_and_another_seed_does_not(sim, tmp_path):
    out, truth_dir, _ = sim
    simulate(tmp_path / "a" / "landing", size="tiny", days=DAYS, start=START, seed=7)
    assert _hashes(tmp_path / "a") == _hashes(out.parent)
    simulate(tmp_path / "b" / "landing", size="tiny", days=DAYS, start=START, seed=8)
    other = _hashes(tmp_path / "b" / "landing")
    same = {k for k, v in _hashes(out).items() if other.get(k) == v}
    assert not any(k.startswith(("telemetry/", "pass_scans/")) for k in same)


def test_append_equals_a_one_shot_run(sim, tmp_path):
    out, _, _ = sim
    root = tmp_path / "inc"
    first = simulate(root / "landing", size="tiny", days=10, start=START, seed=7)
    second = simulate(root / "landing", days=DAYS - 10, append=True)
    assert (first.first_day, first.last_day) == (START, START + timedelta(days=9))
    assert (second.first_day, second.last_day) == (START + timedelta(days=10), START + timedelta(days=DAYS - 1))
    assert second.size == "tiny" and second.seed == 7
    assert _hashes(root) == _hashes(out.parent)
    state = json.loads((root / "ground_truth" / "state.json").read_text())
    assert state["last_day"] == (START + timedelta(days=DAYS - 1)).isoformat()


def test_append_without_state_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        simulate(tmp_path / "landing", append=True)


def test_unknown_fault_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown fault kind"):
        simulate(tmp_path / "landing", fault_rates={"gremlins": 0.5})


def test_landing_layout_and_truth_outside_it(sim):
    out, truth_dir, summary = sim
    assert truth_dir.parent == out.parent and not (out / "ground_truth").exists()
    for c in REFERENCE_CONTRACTS:
        assert (out / "reference" / c.name / f"{c.name}.csv").is_file()
    folders = {p.parent.name for c in EVENT_CONTRACTS for p in _event_files(out, c)}
    assert all(date.fromisoformat(f) for f in folders)
    assert max(folders) <= summary.last_day.isoformat()
    n_files = sum(len(_event_files(out, c)) for c in EVENT_CONTRACTS)
    assert n_files == summary.files_written
    table = summary.as_table()
    assert table.row_count > 5


def test_tiny_holds_every_fault_kind_and_summary_agrees(sim, truth):
    _, _, summary = sim
    kinds = Counter(truth["faults"]["kind"].to_list())
    assert set(FAULT_KINDS) <= set(kinds), set(FAULT_KINDS) - set(kinds)
    assert summary.faults == dict(kinds)


def test_tiny_is_small(sim):
    _, _, summary = sim
    assert 2_000 <= summary.rows["telemetry"] <= 12_000


def test_reference_rows_satisfy_their_contracts(refs):
    for c in REFERENCE_CONTRACTS:
        rows = refs[c.name]
        assert rows, c.name
        for row in rows:
            assert _check_row(c, {k: (v if v != "" else None) for k, v in row.items()}, refs) is None, (c.name, row)
        keys = [tuple(r[k] for k in c.natural_key) for r in rows]
        assert len(keys) == len(set(keys)), c.name
    cats = refs["categories"]
    assert all(float(r["under_cost"]) > float(r["over_cost"]) for r in cats)
    assert len({r["under_cost"] for r in cats}) > 1
    hubs = {r["hub_id"] for r in refs["hubs"]}
    assert {r["hub_id"] for r in refs["hub_capacity"]} == hubs
    types = {r["device_type"] for r in refs["devices"]}
    assert {"locker", "validator", "payment_terminal"} <= types
    assert {r["kind"] for r in refs["events"]} <= {"festival", "sports", "concert", "market"}


def test_each_hub_has_its_own_site_near_its_neighbourhood(refs):
    """A hub's address and coordinates are its own: not its neighbourhood's centroid, two
    hubs never on one spot, each within the stated spread of its centroid; the same city
    (size, seed) gives the same sites."""
    from ingest.simulator.city import HUB_SPREAD_LAT, HUB_SPREAD_LON, build_city, reference_frames
    from ingest.simulator.sizes import SIZES

    nb = {r["neighbourhood_id"]: (float(r["lat"]), float(r["lon"])) for r in refs["neighbourhoods"]}
    sites = [(float(r["lat"]), float(r["lon"])) for r in refs["hubs"]]
    assert len(set(sites)) == len(sites) and not set(sites) & set(nb.values())
    for r in refs["hubs"]:
        lat, lon = nb[r["neighbourhood_id"]]
        assert abs(float(r["lat"]) - lat) <= HUB_SPREAD_LAT + 1e-9 and abs(float(r["lon"]) - lon) <= HUB_SPREAD_LON + 1e-9
        assert re.fullmatch(r"[A-Z][a-z]+ \d{1,3}", r["address"]), r["address"]
    again = reference_frames(build_city(SIZES["tiny"], 7), SIZES["tiny"].lockers_per_hub)["hubs"]
    assert again.select("address", "lat", "lon").rows() == [(r["address"], float(r["lat"]), float(r["lon"]))
                                                          for r in refs["hubs"]]


@pytest.mark.parametrize("contract", EVENT_CONTRACTS, ids=lambda c: c.name)
def test_rows_meant_valid_pass_and_rows_meant_bad_fail(sim, truth, refs, contract):
    out, _, _ = sim
    checked = 0
    for rel, path, bad in _loadable(out, contract, truth):
        for n, line, row in _rows(contract, path):
            why = "unparseable" if row is None else _check_row(contract, row, refs)
            if n in bad:
                assert why is not None, (rel, n, line)
            else:
                assert why is None, (rel, n, why, line)
                checked += 1
    assert checked > 100


def test_line_faults_in_truth_are_exactly_the_bad_lines(sim, truth, refs):
    out, _, _ = sim
    found: dict[str, set[tuple[str, int]]] = defaultdict(set)
    resent, _ = _copies(truth)
    for contract in EVENT_CONTRACTS:
        for rel, path, _bad in _loadable(out, contract, truth):
            if rel in resent:
                assert path.read_bytes() == (out / resent[rel]).read_bytes()
                continue
            for n, _line, row in _rows(contract, path):
                if row is None:
                    found["corrupt_line"].add((rel, n))
                else:
                    why = _check_row(contract, row, refs)
                    if why == "unknown device":
                        found["unknown_device"].add((rel, n))
                    elif why:
                        found["wrong_type"].add((rel, n))
    f = truth["faults"]
    for kind in BAD_KINDS:
        expected = set(f.filter(pl.col("kind") == kind).select("file", "line").iter_rows())
        assert found[kind] == expected, kind


def test_truncated_file_is_a_cut_redelivery(sim, truth):
    out, _, _ = sim
    recs = truth["faults"].filter(pl.col("kind") == "truncated_file")
    assert recs.height >= 1
    for file, line, detail in recs.select("file", "line", "detail").iter_rows():
        data = (out / file).read_bytes()
        original = (out / re.search(r"re-delivery of (\S+?):", detail).group(1)).read_bytes()
        assert not data.endswith(b"\n") and original.startswith(data)
        assert data.count(b"\n") + 1 == line
        with pytest.raises(json.JSONDecodeError):
            json.loads(data.split(b"\n")[-1])


def test_late_deliveries_and_clock_skew_match_the_files(sim, truth, refs):
    out, _, _ = sim
    f = truth["faults"]
    for file, rows, gen in f.filter(pl.col("kind") == "late_delivery").select("file", "rows", "gen_date").iter_rows():
        contract = CONTRACTS[file.split("/")[0]]
        parsed = [r for _, _, r in _rows(contract, out / file) if r is not None]
        assert len(parsed) == rows
        delivered = date.fromisoformat(file.split("/")[1])
        assert delivered > gen
    # skew: rows whose device clock is off by more than the threshold, per file and device
    skewed = Counter()
    for rel, path, _ in _loadable(out, TELEMETRY, truth):
        if rel in _copies(truth)[0]:
            continue
        for _, _, row in _rows(TELEMETRY, path):
            if row is None or _check_row(TELEMETRY, row, refs):
                continue
            off = _ts(row["device_time"], False) - _ts(row["received_at"], True)
            if abs(off.total_seconds()) > TELEMETRY.extra["skew_threshold_s"]:
                skewed[(rel, row["device_id"])] += 1
    expected = {(file, key): rows for file, key, rows in f.filter(pl.col("kind") == "clock_skew").select("file", "key", "rows").iter_rows()}
    assert dict(skewed) == expected
    assert expected


def test_valid_distinct_counts_match_an_independent_count(sim, truth, refs):
    out, _, _ = sim
    totals = {r["contract"]: r for r in truth["event_totals"].iter_rows(named=True)}
    for contract in EVENT_CONTRACTS:
        keys = set()
        rows = bad = 0
        for _rel, path, _ in _loadable(out, contract, truth):
            for _, _, row in _rows(contract, path):
                rows += 1
                if row is None or _check_row(contract, row, refs):
                    bad += 1
                    continue
                keys.add(tuple(row[k] for k in contract.natural_key))
        t = totals[contract.name]
        assert (t["rows"], t["bad_rows"], t["valid_distinct"]) == (rows, bad, len(keys)), contract.name
        assert t["valid_distinct"] < t["valid_rows"] or contract in (TRANSACTIONS, CLEARING)


def test_true_demand_equals_recomputation_from_telemetry(sim, truth, refs):
    out, _, summary = sim
    hub_nbh = {r["hub_id"]: r["neighbourhood_id"] for r in refs["hubs"]}
    seen = set()
    demand: Counter = Counter()
    for _rel, path, _ in _loadable(out, TELEMETRY, truth):
        for _, _, row in _rows(TELEMETRY, path):
            if row is None or _check_row(TELEMETRY, row, refs) or row["kind"] != "locker_pickup":
                continue
            key = (row["device_id"], row["seq"])
            if key in seen:
                continue
            seen.add(key)
            local = _event_time(row).astimezone(TZ).date()
            demand[(local, hub_nbh[row["hub_id"]], row["category"])] += int(row["value"])
    t = truth["daily_demand"]
    got = {(d, n, c): u for d, n, c, u in t.select("date", "neighbourhood_id", "category", "units").iter_rows() if u}
    assert got == dict(demand)
    # zero rows for every neighbourhood × category × day
    assert t.height == DAYS * len(refs["neighbourhoods"]) * len(refs["categories"])
    assert t["date"].min() == summary.first_day and t["date"].max() == summary.last_day
    assert (t["units_incl_pending"] >= t["units"]).all()
    # hub-level truth adds up to the neighbourhood truth
    hub = truth["hub_daily_demand"].group_by("date", "neighbourhood_id", "category").agg(pl.col("units").sum())
    joined = t.join(hub, on=["date", "neighbourhood_id", "category"], suffix="_hub")
    assert (joined["units"] == joined["units_hub"]).all()


def test_demand_has_structure(tmp_path):
    """Weekly pattern, event spikes and intermittent categories exist (small city, no faults)."""
    zero = {k: 0.0 for k in FAULT_KINDS}
    s = simulate(tmp_path / "landing", size="small", days=56, seed=3, fault_rates=zero)
    d = pl.read_parquet(s.truth_paths["daily_demand"])
    by_cat_dow = d.group_by("category", pl.col("date").dt.weekday().alias("dow")).agg(pl.col("units").mean())
    parcels = dict(by_cat_dow.filter(pl.col("category") == "parcels").select("dow", "units").iter_rows())
    assert parcels[2] > 1.3 * parcels[7]  # weekday-heavy category: Tuesday vs Sunday
    zeros = d.group_by("category").agg((pl.col("units") == 0).mean().alias("z"))
    assert zeros.filter(pl.col("category") == "event_gear")["z"][0] > 0.6  # intermittent
    assert zeros.filter(pl.col("category") == "parcels")["z"][0] < 0.2
    faults = pl.read_parquet(s.truth_paths["faults"])
    assert faults.height == 0
    events = pl.read_csv(tmp_path / "landing" / "reference" / "events" / "events.csv")
    on_days = set()
    for r in events.iter_rows(named=True):
        first, last = (datetime.fromisoformat(r[k]).date() for k in ("start_time", "end_time"))
        for k in range((last - first).days + 1):
            on_days.add((first + timedelta(days=k), r["venue_neighbourhood_id"], r["expected_attendance"]))
    big = {(d0, n) for d0, n, a in on_days if a >= 15_000 and d0 <= s.last_day}
    any_event = {(d0, n) for d0, n, _ in on_days}
    gear = d.filter(pl.col("category") == "event_gear").select("date", "neighbourhood_id", "units").rows()
    at_big = [u for d0, n, u in gear if (d0, n) in big]
    quiet = [u for d0, n, u in gear if (d0, n) not in any_event]
    assert at_big and sum(at_big) / len(at_big) > 5 * sum(quiet) / len(quiet)


def test_settlement_faults_match_a_reconciliation(sim, truth):
    out, _, summary = sim
    txns: dict[str, dict] = {}
    for path in _event_files(out, TRANSACTIONS):
        for _, _, row in _rows(TRANSACTIONS, path):
            txns[row["txn_id"]] = row
    settled: dict[str, list] = defaultdict(list)
    found: dict[str, set] = defaultdict(set)
    for path in _event_files(out, CLEARING):
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        body = [json.loads(x) for x in lines[1:]]
        assert header["record"] == "header" and all(b["record"] == "line" for b in body)
        assert header["line_count"] == len(body) and header["total_cents"] == sum(b["amount_cents"] for b in body)
        rel = _rel(out, path)
        in_batch = set()
        for n, b in enumerate(body, start=2):
            t = txns.get(b["txn_id"])
            if b["txn_id"] in in_batch:
                found["duplicate_settlement"].add((rel, n))
                continue
            in_batch.add(b["txn_id"])
            settled[b["txn_id"]].append(b)
            if t is None:
                found["settlement_without_transaction"].add((rel, n))
                continue
            if t["amount_cents"] != b["amount_cents"]:
                found["amount_mismatch"].add((rel, n))
            if _ts(b["settled_at"], True) - _ts(t["txn_time"], False) > timedelta(hours=24):
                found["late_settlement"].add((rel, n))
    f = truth["faults"]
    for kind in ("duplicate_settlement", "settlement_without_transaction", "amount_mismatch", "late_settlement"):
        assert found[kind] == set(f.filter(pl.col("kind") == kind).select("file", "line").iter_rows()), kind
    never = set(f.filter(pl.col("kind") == "never_settled")["key"].to_list())
    unsettled = {k for k in txns if k not in settled}
    assert never <= unsettled
    # the rest is only not yet due: taken in the last two days
    recent = {(summary.last_day - timedelta(days=k)).strftime("%Y%m%d") for k in range(2)}
    assert all(k.split("-")[1] in recent for k in unsettled - never)


def test_validate_module_agrees_with_the_truth(sim, truth):
    validate = pytest.importorskip("ingest.validate")
    out, _, _ = sim
    known = {r["device_id"] for r in csv.DictReader((out / "reference" / "devices" / "devices.csv").open())}
    _, refused = _copies(truth)
    for contract in EVENT_CONTRACTS:
        for rel, path, bad in _loadable(out, contract, truth):
            res = validate.validate_file(contract, path, known)
            assert set(res.bad["line"].to_list()) == bad, rel
            n_lines = sum(1 for _ in _rows(contract, path))
            assert res.good.height == n_lines - len(bad), rel
        for rel in refused:
            if rel.startswith(contract.name + "/"):
                path = out / rel
                try:
                    res = validate.validate_file(contract, path, known)
                except validate.FileRefused:
                    continue
                # not refused by the parser: the cut last line at least must be rejected
                assert res.bad.height >= 1 and res.bad["line"].max() == path.read_bytes().count(b"\n") + 1


def test_data_contracts_doc_is_generated_from_the_contracts():
    from ingest.simulator.docs import DOC_PATH, render_contracts_markdown

    assert DOC_PATH.read_text() == render_contracts_markdown(), "run: python -m ingest.simulator.docs"
    text = DOC_PATH.read_text()
    for c in EVENT_CONTRACTS + REFERENCE_CONTRACTS:
        assert f"### `{c.name}`" in text
        for f in c.fields:
            assert f"| `{f.name}` |" in text
    for k in FAULT_KINDS:
        assert f"| `{k}` |" in text


def test_true_stock_balances_and_is_what_the_lockers_report(sim, truth):
    """The true stock: every day's units balance (what the sweep returns waited its hold,
    never more than was there), and the occupancy the lockers report while closed is the
    hub's closing stock over its space, within the sensor's noise."""
    from ingest.simulator.stock import HOLD_DAYS, OCCUPANCY_NOISE, SWEEP_HOUR

    st = truth["hub_daily_stock"].sort("hub_id", "category", "date")
    assert st.height == 6 * 4 * DAYS
    bal = st.filter(pl.col("closing_units") != pl.col("opening_units") - pl.col("returned_units") + pl.col("deposit_units")
                    - pl.col("pickup_units") + pl.col("shortage_units"))
    assert bal.height == 0, bal
    assert (st["returned_units"] <= st["opening_units"]).all() and st["returned_units"].sum() > 0
    # nothing is returned before it has waited HOLD_DAYS: the first days return nothing
    assert st.filter(pl.col("date") < START + timedelta(days=HOLD_DAYS))["returned_units"].sum() == 0
    prev = st.with_columns(pl.col("closing_units").shift(1).over("hub_id", "category").fill_null(0).alias("prev"))
    assert (prev["opening_units"] == prev["prev"]).all()
    out, _, _ = sim
    occ = []
    for path in _event_files(out, TELEMETRY):
        for _, _, row in _rows(TELEMETRY, path):
            if row is not None and row["kind"] == "occupancy":
                local = datetime.fromisoformat(row["device_time"]).replace(tzinfo=None)
                if 0 < local.hour < SWEEP_HOUR:  # after midnight, before the sweep: yesterday's closing
                    occ.append({"hub_id": row["hub_id"], "date": local.date() - timedelta(days=1), "value": row["value"]})
    occ = pl.DataFrame(occ).group_by("hub_id", "date").agg(pl.col("value").mean())
    hub = st.group_by("hub_id", "date").agg((pl.col("closing_units").sum() / pl.col("capacity_units").sum()).alias("true"))
    j = occ.join(hub, on=["hub_id", "date"])
    assert j.height > 10
    assert (j["value"] - j["true"]).abs().mean() < 2 * OCCUPANCY_NOISE


def test_true_daily_demand_is_the_distribution_daily_demand_draws_from():
    """The forecast benchmark's oracle: the realised units of `daily_demand` average to the
    true mean, and their randomised PIT under the true quantiles is uniform at p50 and p90
    (16 series × 120 days = 1,920 points, binomial SE ≤ 1.1 points)."""
    import numpy as np

    from forecasts.quantiles import randomised_pit
    from ingest.simulator.demand import daily_demand, true_daily_demand

    start, days, last = date(2025, 1, 1), 365, 120
    truth = true_daily_demand("tiny", days, start, last_days=last)
    demand, _ = daily_demand("tiny", days, start)
    units = demand["units"].to_numpy().reshape(truth.mean.shape)
    assert abs(units.mean() / truth.mean.mean() - 1) < 0.02
    assert np.isnan(truth.quantiles[: days - last]).all() and np.isfinite(truth.quantiles[days - last:]).all()
    pit = randomised_pit(units[-last:].reshape(-1), truth.quantiles[-last:].reshape(-1, len(truth.levels)))
    for q in (0.5, 0.9):
        assert abs(np.mean(pit <= q) - q) < 0.03, (q, np.mean(pit <= q))
