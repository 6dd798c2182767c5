"""Render docs/data-contracts.md from the contracts, so the document cannot drift.

    .venv/bin/python -m ingest.simulator.docs          # rewrite docs/data-contracts.md
    .venv/bin/python -m ingest.simulator.docs --check  # exit 1 if it is out of date

`tests/test_simulator.py` fails when the committed file differs from this rendering.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ingest.contracts import (
    CITY_TZ,
    EVENT_CONTRACTS,
    READING_KINDS,
    REFERENCE_CONTRACTS,
    TELEMETRY,
    VOLUME_HISTORY_DAYS,
    VOLUME_MIN_HISTORY,
    Contract,
    Field,
    landing_dir_for,
)

from .demand import CLOSE_HOUR, OPEN_HOUR
from .faults import DEFAULT_FAULT_RATES, FAULT_KINDS, FAULT_UNITS
from .sizes import SIZES
from .stock import HOLD_DAYS, OCCUPANCY_NOISE, SWEEP_HOUR

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "data-contracts.md"

# What a correct pipeline does with each injected fault (the tests hold it to this).
FAULT_HANDLING = {
    "duplicate_event": "load once: de-duplicate on the natural key",
    "duplicate_file": "no-op: the file's SHA-256 is already in the manifest",
    "late_delivery": "load into the event's own partition (its local date), not the delivery date",
    "out_of_order": "nothing: order within a file carries no meaning",
    "clock_skew": "flag the rows; use `received_at` as event time",
    "corrupt_line": "quarantine the line; load the rest of the file",
    "wrong_type": "quarantine the line; load the rest of the file",
    "truncated_file": "refuse the file whole (or quarantine its cut last line); the rows arrive complete elsewhere",
    "unknown_device": "quarantine the rows (device not in reference `devices`)",
    "never_settled": "reconciliation: transaction without settlement",
    "late_settlement": "reconciliation: settled more than 24 h after the transaction",
    "amount_mismatch": "reconciliation: settled amount differs",
    "settlement_without_transaction": "reconciliation: settlement for an unknown transaction",
    "duplicate_settlement": "reconciliation: transaction settled twice",
}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _range(f: Field) -> str:
    parts = []
    if f.allowed is not None:
        parts.append(", ".join(f"`{a}`" for a in f.allowed))
    if f.min is not None or f.max is not None:
        lo = "" if f.min is None else f"{f.min:g}"
        hi = "" if f.max is None else f"{f.max:g}"
        parts.append(f"{lo} … {hi}".strip())
    return "; ".join(parts)


def _dtype(f: Field, contract: Contract) -> str:
    if f.dtype != "timestamp":
        return f.dtype
    utc = f.name in ("received_at", "settled_at")
    return "timestamp (UTC, `Z`)" if utc else "timestamp (local, with offset)"


def _daily_expectations(c: Contract) -> str:
    """The day-level expectations of a contract, in words (`ingest/partition_profile.py`)."""
    parts = []
    if c.volume_band is not None:
        lo, hi = c.volume_band
        parts.append(f"rows {lo:g}–{hi:g} × the median of the previous {VOLUME_HISTORY_DAYS} days (once {VOLUME_MIN_HISTORY} of them hold rows)")
    for f in c.fields:
        if f.daily_mean is not None:
            parts.append(f"mean `{f.name}` {f.daily_mean[0]:g}–{f.daily_mean[1]:g}")
        if f.daily_median is not None:
            parts.append(f"median `{f.name}` {f.daily_median[0]:g}–{f.daily_median[1]:g}")
        for value, share in f.daily_min_share:
            parts.append(f"`{f.name}` = `{value}` ≥ {share * 100:g} % of rows")
    if c.fresh_within_days is not None:
        parts.append(f"the table's latest event date at most {c.fresh_within_days} day(s) before the run's day")
    return "; ".join(parts)


def contract_section(c: Contract) -> str:
    folder = landing_dir_for(c) + ("/" if c.reference else "/<YYYY-MM-DD>/")
    lines = [
        f"### `{c.name}`",
        "",
        _cell(c.description),
        "",
        f"- source: **{c.source}** · format: **{c.file_format}** · files: `{folder}{c.filename_glob}`",
        f"- natural key: `({', '.join(c.natural_key)})` · raw table: `{c.table}`",
    ]
    if c.reference:
        lines.append("- snapshot: the newest file replaces the table")
    else:
        lines.append(f"- event time: `{c.event_time}` (partition = its local date in {CITY_TZ})")
    lines.append(f"- reject threshold: a file with more than {c.max_reject_ratio:.0%} bad rows is refused whole")
    for k, v in sorted(c.extra.items()):
        lines.append(f"- `{k}`: {v}")
    daily = _daily_expectations(c)
    if daily:
        lines.append(f"- each day as a whole (blocking check): {daily}")
    lines += [
        "",
        "| field | type | required | allowed / range | unit | privacy | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in c.fields:
        lines.append(
            f"| `{f.name}` | {_dtype(f, c)} | {'yes' if f.required else 'no'} | {_cell(_range(f))} | "
            f"{_cell(f.unit or '')} | {f.privacy} | {_cell(f.description)} |"
        )
    return "\n".join(lines) + "\n"


def render_contracts_markdown() -> str:
    thr = TELEMETRY.extra.get("skew_threshold_s")
    out = [
        "# Data contracts",
        "",
        "<!-- generated by `python -m ingest.simulator.docs` from ingest/contracts.py; do not edit by hand -->",
        "",
        "For data teams delivering files to civicflow, and for anyone reading `raw.*`. Each file kind has one",
        "contract in `ingest/contracts.py`; this page is rendered from it.",
        "",
        "## Rules for every source",
        "",
        '- **Landing layout.** Event files go to `<landing>/<contract>/<YYYY-MM-DD>/<file>`, where the date',
        '  folder is the day the file was *delivered* (a late file lands in a later folder). Reference',
        '  snapshots go to `<landing>/reference/<name>/<name>.csv`. The layout is validated, not trusted',
        '  (`ingest/landing.py`): everything else is *misplaced*, recorded once per reason as a refusal in',
        '  `raw._load_manifest` (contract `landing` when no contract owns it), named in the run summary and',
        '  `civicflow status`, never loaded and never in the way of the other files — a folder no contract',
        "  owns (`weather/`, `Telemetry/`), a delivery day before the partitions' first day",
        '  (`CIVICFLOW_START_DATE`) or more than a day ahead, a file outside a day folder, a subfolder, an',
        '  extension in the wrong case (`.JSONL`), another extension, a symbolic link (never followed), a',
        '  file that cannot be read or is gone when read. Compressed files (`.jsonl.gz`, `.csv.gz`) are',
        '  refused by name: deliver them uncompressed. Names starting with a dot are uploads in progress',
        '  and are not looked at. The run range and the partitions end at the last day folder of a known',
        '  source.',
        "- **Files still being written.** A file's size, mtime and SHA-256 are taken from one read; a file",
        '  whose size or mtime changes while it is read is refused as `still being written` and looked at',
        '  again next run. A file changed after it was loaded is a new delivery: a new version, its rows',
        '  de-duplicated on the natural key.',
        f"- **Time zones.** Device, validator and terminal clocks write ISO-8601 local time ({CITY_TZ}) *with*",
        "  its offset (`2026-01-05T08:13:22+01:00`); gateways and the clearing operator write UTC with `Z`",
        "  (`2026-01-05T07:13:25Z`). A timestamp without offset or `Z` is a bad value. The warehouse stores",
        "  naive UTC and derives `event_date`, the local calendar date of the event.",
        "- **Event time of telemetry.** `received_at` is the gateway's trusted clock, always within seconds",
        f"  of the reading. If `|device_time − received_at|` exceeds {thr} s the device clock is skewed: the row",
        "  is flagged and `received_at` is its event time; otherwise `device_time` is.",
        "- **Natural keys.** Rows are de-duplicated on the contract's natural key across files and runs;",
        '  a file is identified by its SHA-256, so re-delivering the same bytes is a no-op. A row that',
        '  repeats a known key with the same values is a duplicate (counted); with other values it is',
        '  quarantined, naming the first field that differs and both values, and the row loaded first is kept.',
        '- **Types at ingest.** A string field takes a JSON string (`"category": 7` is quarantined as',
        '  `a JSON number, not a string`; arrays, objects and booleans likewise); a number is finite (`NaN`,',
        '  `Infinity` are `not a finite number`); `device_id`, `hub_id` and `category` exist in the loaded',
        '  reference data (`unknown device`, `unknown hub`, `unknown category`); every timestamp of an event',
        "  row lies in the contract's plausible window, from 2020-01-01 (`SERVICE_START`) to one day after",
        "  the loading run's clock. Timestamps may carry fractional seconds.",
        '- **Parsing.** A quoted CSV field may hold a line end (the record is numbered by its first line);',
        '  a UTF-8 byte order mark is skipped in CSV and JSON lines; blank lines at the end of a file are',
        "  not rows; a JSON object repeating a key is quarantined (`duplicate key 'seq' in the JSON object`).",
        "- **Bad rows** (unparseable, wrong type, out of range, not allowed, unknown device) go to",
        "  `raw._quarantine` with file, line, field, reason and raw text. A file whose share of bad rows passes",
        "  its contract's threshold is refused whole and stays in the landing zone. After a contract fix,",
        "  `civicflow ingest replay-quarantine [--source S] [--dry-run]` re-validates the quarantined rows",
        "  against the contracts as they are now and loads those that pass, once; the others stay with the",
        "  reason the current contract gives.",
        "- **Days judged as a whole.** Every row of a day can be valid while the day is not: a tenth of its",
        "  usual volume, every amount at the maximum, one kind of reading gone, only weeks-old events. Each",
        "  event contract declares what a normal day looks like (its section below: volume against the",
        "  source's own recent history, daily means, medians and shares, freshness); the nightly run's",
        "  blocking Great Expectations check fails a day outside it, and stops what is downstream.",
        "- **Whole files refused** (nothing loaded, the file stays, the run names it with the reason): an",
        "  empty (zero-byte or blank) file, a CSV with a header and no rows, a file whose last line is cut",
        "  off without a line end (truncated), a clearing batch that does not add up to its header, and a",
        "  CSV whose header is not exactly the contract's columns in order (a column added, missing,",
        "  renamed or moved).",
        "- **Schema drift in JSON lines.** A JSON object with a key the contract does not know is *loaded*:",
        "  the extra key is ignored (it is not stored) and recorded per file in `raw._load_manifest.extra_keys`,",
        "  so a producer can add a field without the nightly run refusing its files, and the data team sees",
        "  it and can extend the contract. A missing key is a missing field (quarantined if required); a",
        "  value of the wrong type (`\"seq\": 4.5`, `\"value\": true`, `\"hub_id\": {…}`, an epoch number for a timestamp) is",
        "  quarantined with its field. Digits sent as a JSON string (`\"seq\": \"3\"`) are accepted. A line that",
        "  is not a JSON object is quarantined (`unparseable JSON line`, `not a JSON object`); a line that is",
        "  not valid UTF-8 is quarantined as `invalid UTF-8`.",
        "- **Large files** are read in chunks of whole lines and stay one transaction: a crash, or a refusal",
        "  found late in the file, leaves nothing of it behind.",
        "- **Privacy.** `public` fields may be published; `quasi` fields identify in combination; `identity`",
        "  fields identify a person and never leave the governed layer unaggregated.",
        "",
        "## Event sources",
        "",
    ]
    for c in EVENT_CONTRACTS:
        out.append(contract_section(c))
        if c is TELEMETRY:
            out += [
                "Reading kinds: the unit each must carry and its possible range.",
                "",
                "| kind | unit | min | max | category |",
                "|---|---|---|---|---|",
                *[
                    f"| `{k}` | `{u}` | {lo:g} | {hi:g} | {'required' if k in TELEMETRY.category_required_for else 'empty'} |"
                    for k, (u, lo, hi) in READING_KINDS.items()
                ],
                "",
                "Demand is the sum of `value` over valid, distinct `locker_pickup` readings per neighbourhood ×",
                "category × local date.",
                "",
            ]
    out += ["## Reference data", ""]
    for c in REFERENCE_CONTRACTS:
        out.append(contract_section(c))
    out += [
        "## Faults the simulator injects",
        "",
        "`civicflow simulate` (`ingest.simulator.simulate`) writes a landing zone with these faults at",
        "configurable rates (`fault_rates={kind: rate}`); each is listed in the ground truth",
        "(`ground_truth/faults.parquet`: kind, contract, file, line, key, rows, detail). Every kind occurs",
        "at least once in a 28-day run when its rate is above zero.",
        "",
        "| kind | unit of the rate | default rate | what a correct pipeline does |",
        "|---|---|---|---|",
        *[
            f"| `{k}` | {_cell(FAULT_UNITS[k])} | {DEFAULT_FAULT_RATES[k]:g} | {_cell(FAULT_HANDLING[k])} |"
            for k in FAULT_KINDS
        ],
        "",
        "## Simulated city sizes",
        "",
        "| size | neighbourhoods | hubs | categories | lockers per hub | telemetry files per day | suggested days |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| `{s.name}` | {s.neighbourhoods} | {s.hubs} | {s.categories} | {s.lockers_per_hub} | "
            f"{s.telemetry_files_per_day} | {s.suggested_days} |"
            for s in SIZES.values()
        ],
        "",
        "Ground truth (Parquet, outside the landing zone, default `<landing>/../ground_truth/`):",
        "`event_totals` and `event_counts` (valid distinct events per contract, and per generated day),",
        "`daily_demand` (units and pickups per local date × neighbourhood × category, zeros included;",
        "`units_incl_pending` adds readings whose late file is due after the last day), `hub_daily_demand`,",
        "`hub_daily_stock` (the lockers' true stock per local date × hub × category: opening, returned,",
        "deposited, picked up, shortage and closing units, and the capacity), `faults`, and `state.json`",
        "for `--append`.",
        "",
        "Stock: a hub's lockers hold what couriers deposit until its customer collects it; the morning",
        f"sweep ({SWEEP_HOUR:02d}:00–{OPEN_HOUR:02d}:00 local) takes out, as one `locker_return` reading per",
        f"unit, what has waited {HOLD_DAYS} days; pickups beyond the stock are served from the depot. Each",
        "`occupancy` reading is the hub's stock across categories over its total space (its categories'",
        f"capacity summed), as a locker senses it (±{OCCUPANCY_NOISE:g}, whole percent); from closing",
        f"({CLOSE_HOUR:02d}:00) to the sweep nothing moves, so a night's readings give the day's closing stock.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render_contracts_markdown()
    if "--check" in argv:
        ok = DOC_PATH.exists() and DOC_PATH.read_text() == text
        print("up to date" if ok else f"{DOC_PATH} is out of date: run python -m ingest.simulator.docs")
        return 0 if ok else 1
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
