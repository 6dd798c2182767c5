"""`simulate`: generate a window of days into a landing zone, with its ground truth.

Day by day: demand → telemetry → pass scans → transactions → clearing, each split into
its delivered files with faults; files whose delivery date falls in the window are
written; truth is computed per generated day. Days are independent random streams, so
`append=True` regenerates the few days before the window (their late files are due
inside it) and writes only what is new.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ingest.contracts import CLEARING, PASS_SCANS, TELEMETRY, TRANSACTIONS

from .city import City, build_city, reference_frames
from .clock import day_bounds, rng_for
from .demand import locker_moves
from .events import EVENT_HORIZON_DAYS, calendar, events_by_day, events_frame
from .faults import MAX_LATE_DAYS, OutFile, event_deliveries, resolve_rates, skew_for_day
from .ground_truth import STATE_VERSION, DayTruth, day_truth, read_state, write_truth
from .passes import Passes, issue_passes, onboarding_frame, scans_day
from .settlement import clearing_day, transactions_day
from .sizes import SIZES, SizeSpec
from .stock import StockLedger, stock_ledger
from .telemetry import SEQ_PER_DAY, telemetry_day
from .writers import header_lines, render, write, write_reference

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
PARALLEL_MIN_ROWS = 3_000_000
_WORKER_CTX: "_Context | None" = None


@dataclass
class SimulationSummary:
    out: Path
    truth_dir: Path
    size: str
    seed: int
    first_day: date
    last_day: date
    files_written: int
    bytes_written: int
    rows: dict[str, int]  # data rows written per contract (all lines but headers)
    faults: dict[str, int]  # injected faults per kind, in the files written by this run
    truth_paths: dict[str, Path]
    seconds: float = 0.0
    reference_files: list[Path] = field(default_factory=list)

    @property
    def telemetry_rows_per_second(self) -> float:
        return self.rows.get("telemetry", 0) / self.seconds if self.seconds else 0.0

    def as_table(self):
        """A rich Table for the CLI."""
        from rich.table import Table

        t = Table(title=f"simulated {self.size} city, seed {self.seed}: {self.first_day} → {self.last_day}")
        t.add_column("what")
        t.add_column("value", justify="right")
        t.add_row("landing zone", str(self.out))
        t.add_row("ground truth", str(self.truth_dir))
        t.add_row("files written", f"{self.files_written:,}")
        t.add_row("bytes written", f"{self.bytes_written:,}")
        for k, v in sorted(self.rows.items()):
            t.add_row(f"rows · {k}", f"{v:,}")
        for k, v in sorted(self.faults.items()):
            t.add_row(f"faults · {k}", f"{v:,}")
        t.add_row("seconds", f"{self.seconds:.1f}")
        return t


@dataclass
class _DayResult:
    truth: DayTruth
    files: int
    bytes: int
    rows: dict[str, int]
    faults: dict[str, int]


@dataclass
class _Context:
    """Everything a day needs; read-only once built, so days can run in parallel."""

    city: City
    spec: SizeSpec
    seed: int
    start: date
    first: date
    last: date
    rates: dict
    evs_on: dict
    passes: Passes
    eligible: np.ndarray
    out: Path
    stock: StockLedger

    def txns(self, i: int, cache: dict[int, pl.DataFrame]) -> pl.DataFrame | None:
        if i < 0:
            return None
        if i not in cache:
            d = self.start + timedelta(days=i)
            cache[i] = transactions_day(
                self.city, self.spec, d, i, self.passes, int(self.eligible[i]), rng_for(self.seed, i, "transactions"),
                rng_for(self.seed, i, "faults:transactions"), self.rates,
            )
        return cache[i]

    def files_of_day(self, d: date, cache: dict[int, pl.DataFrame]) -> list[OutFile]:
        city, spec, seed, rates = self.city, self.spec, self.seed, self.rates
        i = (d - self.start).days
        evs = self.evs_on.get(d, [])
        n_lockers = len(city.locker_ids)
        pickups, deposits = locker_moves(city, spec, d, i, evs, rng_for(seed, i, "demand"))
        skew = skew_for_day(seed, rates, i, n_lockers, n_lockers + len(city.gateway_ids))
        tele, pk_locker = telemetry_day(
            city, spec, d, i, pickups, deposits, skew, rng_for(seed, i, "telemetry"), self.stock.day(i)
        )
        files = event_deliveries(
            TELEMETRY, tele,
            [f"telemetry_{d:%Y-%m-%d}_gw{k + 1:02d}" for k in range(spec.telemetry_files_per_day)],
            d, i, rng_for(seed, i, "faults:telemetry"), rates, _unknown_telemetry(i), allow_truncate=True,
        )
        scans = scans_day(city, spec, d, pickups, pk_locker, evs, self.passes, int(self.eligible[i]), rng_for(seed, i, "scans"))
        files += event_deliveries(
            PASS_SCANS, scans, [f"pass_scans_{d:%Y-%m-%d}_lockers", f"pass_scans_{d:%Y-%m-%d}_validators"],
            d, i, rng_for(seed, i, "faults:pass_scans"), rates, _unknown_scans(d), allow_truncate=False,
        )
        tx = self.txns(i, cache)
        if tx is not None and tx.height:
            files.append(OutFile(TRANSACTIONS, d, d, f"transactions_{d:%Y-%m-%d}.jsonl", tx))
        batches = clearing_day(
            city, d, i, self.txns(i - 1, cache), self.txns(i - 2, cache), rng_for(seed, i, "faults:clearing"), rates
        )
        for stem, lines, header in batches:
            if lines.height:  # an operator with nothing to clear sends no batch
                files.append(OutFile(CLEARING, d, d, f"{stem}.jsonl", lines, header=header))
        cache.pop(i - 2, None)
        return files

    def day(self, d: date, cache: dict[int, pl.DataFrame]) -> _DayResult:
        files = self.files_of_day(d, cache)
        n_files = n_bytes = 0
        rows: dict[str, int] = {}
        for f in files:
            if self.first <= f.delivery <= self.last:
                n_bytes += write(self.out, f)
                n_files += 1
                if f.copy_of is None:
                    n = f.rows.height
                else:
                    data = render(f)
                    n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - header_lines(f)
                rows[f.contract.name] = rows.get(f.contract.name, 0) + n
        truth = day_truth(files, d, self.last, self.city)
        faults = dict(truth.faults.filter(pl.col("delivery_date") >= self.first).group_by("kind").len().iter_rows())
        return _DayResult(truth, n_files, n_bytes, rows, faults)


def _run_block(ctx: _Context, block: list[date]) -> list[_DayResult]:
    cache: dict[int, pl.DataFrame] = {}
    return [ctx.day(d, cache) for d in block]


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx


def _run_block_in_worker(job: tuple[int, list[date]]) -> tuple[int, list[_DayResult]]:
    assert _WORKER_CTX is not None
    k, block = job
    return k, _run_block(_WORKER_CTX, block)


def _unknown_telemetry(day_index: int):
    def make(rows: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        m = int(rng.integers(1, 4))
        i = int(rng.integers(0, max(1, rows.height - m)))
        dev = f"LK-X{int(rng.integers(0, 0xFFFF)):04X}"
        return rows.slice(i, m).with_columns(
            device_id=pl.lit(dev),
            seq=pl.int_range(pl.len(), dtype=pl.Int64) + day_index * SEQ_PER_DAY,
            kind=pl.lit("heartbeat"),
            category=pl.lit(None, dtype=pl.String),
            value=pl.lit(0.0),
            unit=pl.lit("none"),
            _fault=pl.lit("unknown_device"),
            _valid=pl.lit(False),
        )

    return make


def _unknown_scans(d: date):
    def make(rows: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        m = int(rng.integers(1, 3))
        i = int(rng.integers(0, max(1, rows.height - m)))
        dev = f"VL-X{int(rng.integers(0, 0xFFFF)):04X}"
        return rows.slice(i, m).with_columns(
            device_id=pl.lit(dev),
            scan_id=pl.format("S{}-U{}", pl.lit(f"{d:%Y%m%d}"), pl.int_range(pl.len()).cast(pl.String).str.zfill(6)),
            _fault=pl.lit("unknown_device"),
            _valid=pl.lit(False),
        )

    return make


def simulate(
    out: Path,
    size: str = "tiny",
    days: int = 28,
    start: date = date(2026, 1, 1),
    seed: int = 7,
    append: bool = False,
    fault_rates: dict | None = None,
    progress: bool = False,
    truth_dir: Path | None = None,
    workers: int | None = None,
) -> SimulationSummary:
    """Simulate `days` days of the city into landing zone `out`; see the package docstring."""
    t0 = time.perf_counter()
    out = Path(out)
    truth_dir = Path(truth_dir) if truth_dir is not None else out.parent / "ground_truth"
    if days < 1:
        raise ValueError("days must be at least 1")
    if append:
        state = read_state(truth_dir)
        size, seed = state["size"], int(state["seed"])
        start = date.fromisoformat(state["start"])
        rates = resolve_rates(state["fault_rates"])
        first = date.fromisoformat(state["last_day"]) + timedelta(days=1)
    else:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
        rates = resolve_rates(fault_rates)
        first = start
    spec = SIZES[size]
    last = first + timedelta(days=days - 1)
    gen_first = max(start, first - timedelta(days=MAX_LATE_DAYS))
    city = build_city(spec, seed)
    evs_all = calendar(city, spec, seed, start, last + timedelta(days=EVENT_HORIZON_DAYS))
    evs_on = events_by_day(evs_all)
    # passes: everything issued up to the last day (scans use those issued before their day)
    batches = [issue_passes(city, spec, seed, start, -1)] + [
        issue_passes(city, spec, seed, start, i) for i in range((last - start).days + 1)
    ]
    eligible = np.cumsum([b.pass_id.len() for b in batches])  # eligible[i] = issued before day i
    passes = Passes.concat(batches)

    # the true stock carries from day to day: built in order, from the first day of the city
    stock = stock_ledger(city, spec, seed, start, (last - start).days + 1, evs_on)

    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(city, spec, seed, start, first, last, rates, evs_on, passes, eligible, out, stock)
    gen_days = [gen_first + timedelta(days=k) for k in range((last - gen_first).days + 1)]
    if workers is None:
        # worker processes pay ~2 s to start: only worth it for big runs
        est_rows = len(gen_days) * spec.hubs * (spec.heartbeats_per_day + 6 * spec.lockers_per_hub * 8)
        workers = DEFAULT_WORKERS if est_rows > PARALLEL_MIN_ROWS else 1
    n_workers = max(1, min(workers, len(gen_days)))
    n_blocks = 1 if n_workers == 1 else min(len(gen_days), n_workers * 6)
    blocks = [[gen_days[j] for j in idx] for idx in np.array_split(np.arange(len(gen_days)), n_blocks) if len(idx)]
    results: list[_DayResult] = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"simulating {size}", total=len(gen_days))
    try:
        if n_workers == 1:
            for block in blocks:
                results += _run_block(ctx, block)
                if bar is not None:
                    bar.advance(task, len(block))
        else:
            # Separate processes (spawned: polars' thread pool does not survive fork), one
            # polars thread each; blocks of contiguous days keep the transaction cache useful.
            mp = multiprocessing.get_context("spawn")
            saved = os.environ.get("POLARS_MAX_THREADS")
            os.environ["POLARS_MAX_THREADS"] = "1"
            try:
                pool = mp.Pool(n_workers, initializer=_init_worker, initargs=(ctx,))
            finally:
                if saved is None:
                    os.environ.pop("POLARS_MAX_THREADS", None)
                else:
                    os.environ["POLARS_MAX_THREADS"] = saved
            with pool:
                by_block = {}
                for k, res in pool.imap_unordered(_run_block_in_worker, list(enumerate(blocks))):
                    by_block[k] = res
                    if bar is not None:
                        bar.advance(task, len(res))
            results = [r for k in sorted(by_block) for r in by_block[k]]
    finally:
        if bar is not None:
            bar.stop()

    files_written = sum(r.files for r in results)
    bytes_written = sum(r.bytes for r in results)
    rows_written: dict[str, int] = {}
    fault_counts: dict[str, int] = {}
    for r in results:
        for k, v in r.rows.items():
            rows_written[k] = rows_written.get(k, 0) + v
        for k, v in r.faults.items():
            fault_counts[k] = fault_counts.get(k, 0) + v
    truths = [r.truth for r in results]

    refs = reference_frames(city, spec.lockers_per_hub)
    refs["events"] = events_frame(city, evs_all)
    refs["pass_onboarding"] = onboarding_frame(city, passes, day_bounds(last)[1] - 1)
    ref_paths = [write_reference(out, name, df) for name, df in refs.items()]

    state = {
        "version": STATE_VERSION, "size": size, "seed": seed, "start": start.isoformat(),
        "last_day": last.isoformat(), "fault_rates": rates, "landing": str(out),
    }
    paths = write_truth(truth_dir, city, start, last, truths, gen_first if append else None, state,
                        stock.frame(city, start))
    return SimulationSummary(
        out=out, truth_dir=truth_dir, size=size, seed=seed, first_day=first, last_day=last,
        files_written=files_written, bytes_written=bytes_written, rows=rows_written, faults=fault_counts,
        truth_paths=paths, seconds=time.perf_counter() - t0, reference_files=ref_paths,
    )
