"""Device transactions and the clearing operator's batches.

A transaction taken on day d is normally cleared in the operator's batch delivered on
d+1 (settled between 00:30 and 04:30 UTC); some are cleared on d+2 (more than 24 h
later); a few never. Batches may carry settlements for unknown transactions, wrong
amounts and duplicate lines. The header always adds up: these are reconciliation faults,
not file faults.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from .city import City
from .clock import fmt_local, fmt_utc, local_seconds_to_epoch, utc_iso
from .faults import FaultRates, hits
from .passes import Passes
from .sizes import SizeSpec

PLAN_NEXT_DAY, PLAN_LATE, PLAN_NEVER = 0, 1, 2
TXN_COLUMNS = ("txn_id", "device_id", "pass_id", "amount_cents", "currency", "txn_time")
CLEARING_COLUMNS = ("record", "batch_id", "line_no", "txn_id", "amount_cents", "settled_at")


def transactions_day(
    city: City,
    spec: SizeSpec,
    d: date,
    day_index: int,
    passes: Passes,
    eligible_n: int,
    rng: np.random.Generator,
    frng: np.random.Generator,
    rates: FaultRates,
) -> pl.DataFrame:
    """Transactions of day d with their (hidden) settlement plan."""
    lam = spec.txn_per_hub * city.hub_weight * (1.15 if d.weekday() >= 5 else 1.0)
    per_hub = rng.poisson(lam)
    hub = np.repeat(np.arange(len(city.hub_ids)), per_hub)
    n = hub.size
    t = local_seconds_to_epoch(d, rng.integers(7 * 3600, 23 * 3600, n))
    amount = np.clip(np.round(rng.lognormal(np.log(450), 0.6, n) / 10) * 10, 50, 20_000).astype(np.int64)
    pidx = rng.integers(0, eligible_n, n)
    order = np.lexsort((hub, t))
    hub, t, amount, pidx = hub[order], t[order], amount[order], pidx[order]

    never = hits(frng, rates, "never_settled", day_index, n)
    late = hits(frng, rates, "late_settlement", day_index, n) & ~never
    mismatch = hits(frng, rates, "amount_mismatch", day_index, n) & ~never & ~late
    plan = np.where(never, PLAN_NEVER, np.where(late, PLAN_LATE, PLAN_NEXT_DAY))
    delta = frng.choice(np.array([-1, 1]), n) * frng.integers(1, 50, n) * 10

    return pl.DataFrame(
        {
            "txn_id": pl.int_range(n, eager=True).cast(pl.String).str.zfill(6),
            "device_id": pl.Series(city.terminal_ids).gather(hub),
            "pass_id": passes.pass_id.gather(pidx),
            "amount_cents": amount,
            "_t": t.astype(np.int64),
            "_op": city.terminal_operator[hub].astype(np.int32),
            "_plan": plan.astype(np.int8),
            "_mismatch": mismatch,
            "_settle_amount": np.where(mismatch, np.maximum(10, amount + delta), amount).astype(np.int64),
        },
    ).with_columns(
        txn_id=pl.lit(f"TX-{d:%Y%m%d}-") + pl.col("txn_id"),
        currency=pl.lit("EUR"),
        txn_time=fmt_local("_t"),
        _fault=pl.when(pl.col("_plan") == PLAN_NEVER).then(pl.lit("never_settled")).otherwise(None),
        _valid=pl.lit(True),
        _file=pl.lit(0, dtype=pl.Int32),
    )


def clearing_day(
    city: City,
    d: date,
    day_index: int,
    prev1: pl.DataFrame | None,
    prev2: pl.DataFrame | None,
    frng: np.random.Generator,
    rates: FaultRates,
) -> list[tuple[str, pl.DataFrame, dict]]:
    """Clearing batches delivered on day d, one per operator: (file stem, lines, header)."""
    due = []
    if prev1 is not None:
        due.append(prev1.filter(pl.col("_plan") == PLAN_NEXT_DAY))
    if prev2 is not None:
        due.append(prev2.filter(pl.col("_plan") == PLAN_LATE))
    txns = pl.concat(due) if due else None
    out = []
    n_ops = len(city.operator_ids)
    orphan = hits(frng, rates, "settlement_without_transaction", day_index, n_ops)
    dup = hits(frng, rates, "duplicate_settlement", day_index, n_ops)
    utc_midnight = (d - date(1970, 1, 1)).days * 86_400
    for op, op_id in enumerate(city.operator_ids):
        if txns is not None:
            lines = txns.filter(pl.col("_op") == op).sort("_t", "txn_id").select(
                "txn_id",
                pl.col("_settle_amount").alias("amount_cents"),
                pl.col("_t").alias("_txn_t"),
                pl.when(pl.col("_plan") == PLAN_LATE).then(pl.lit("late_settlement"))
                .when(pl.col("_mismatch")).then(pl.lit("amount_mismatch"))
                .otherwise(None).alias("_fault"),
            )
        else:
            lines = pl.DataFrame(schema={"txn_id": pl.String, "amount_cents": pl.Int64, "_txn_t": pl.Int64, "_fault": pl.String})
        extra = []
        if orphan[op]:
            prev_day = d - timedelta(days=1)
            extra.append(
                pl.DataFrame(
                    {"txn_id": [f"TX-{prev_day:%Y%m%d}-9{int(frng.integers(0, 99_999)):05d}"],
                     "amount_cents": [int(frng.integers(5, 200)) * 10], "_txn_t": [None],
                     "_fault": ["settlement_without_transaction"]},
                    schema=lines.schema,
                )
            )
        if dup[op] and lines.height:
            i = int(frng.integers(0, lines.height))
            extra.append(lines.slice(i, 1).with_columns(_fault=pl.lit("duplicate_settlement")))
        if extra:
            lines = pl.concat([lines, *extra])
        n = lines.height
        settled = np.sort(utc_midnight + frng.integers(1800, 4 * 3600 + 1800, n))
        batch_id = f"CB-{op_id}-{d:%Y%m%d}"
        lines = lines.with_columns(
            record=pl.lit("line"),
            batch_id=pl.lit(batch_id),
            line_no=pl.int_range(1, n + 1, dtype=pl.Int64),
            _settled=pl.Series(settled, dtype=pl.Int64),
        ).with_columns(
            settled_at=fmt_utc("_settled"), _valid=pl.lit(True), _file=pl.lit(op, dtype=pl.Int32)
        )
        header = {
            "record": "header",
            "batch_id": batch_id,
            "line_count": n,
            "total_cents": int(lines["amount_cents"].sum()) if n else 0,
            "cleared_at": utc_iso(utc_midnight + 5 * 3600),
        }
        out.append((f"clearing_{op_id}_{d:%Y-%m-%d}", lines, header))
    return out

