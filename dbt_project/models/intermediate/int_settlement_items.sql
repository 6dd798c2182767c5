-- Transactions with their clearing lines, every item classified exactly once.
--
-- One row per transaction (item_type = 'transaction') plus one row per clearing line that is
-- not the settling line of a transaction (item_type = 'clearing_line'). Rules, applied per
-- transaction T with clearing lines L(T) (lines ordered by exact-amount first, then
-- settled_ts, batch_id, line_no — a total order, so the result does not depend on input order):
--   no line                          → T unmatched_transaction
--   ≥1 line with T's amount          → T matched (first exact line); other lines duplicate
--   1 line, different amount         → T amount_variance (that line)
--   ≥2 lines, none with T's amount   → T ambiguous; each of its lines ambiguous
--   line whose txn_id is unknown     → unmatched_settlement
-- So every clearing line appears exactly once: as a transaction's settling line or as its own row.
with txns as (
    select * from {{ ref('stg_transactions') }}
),

lines as (
    select
        l.*,
        t.txn_id is not null as is_txn_known,
        l.amount_cents = t.amount_cents as is_exact
    from {{ ref('stg_clearing_lines') }} as l
    left join txns as t on t.txn_id = l.txn_id
),

ranked as (
    select
        *,
        row_number() over (
            partition by txn_id
            order by is_exact desc, settled_ts, batch_id, line_no
        ) as rank_in_txn
    from lines
    where is_txn_known
),

per_txn as (
    select
        txn_id,
        count(*) as line_count,
        count(*) filter (where is_exact) as exact_count
    from ranked
    group by txn_id
),

txn_items as (
    select
        'transaction' as item_type,
        t.txn_id,
        t.device_id,
        t.amount_cents as txn_amount_cents,
        t.event_ts as txn_ts,
        t.txn_date,
        coalesce(p.line_count, 0) as clearing_line_count,
        case
            when p.line_count is null then 'unmatched_transaction'
            when p.exact_count >= 1 then 'matched'
            when p.line_count = 1 then 'amount_variance'
            else 'ambiguous'
        end as reconciliation_class
    from txns as t
    left join per_txn as p on p.txn_id = t.txn_id
),

txn_rows as (
    select
        'txn:' || ti.txn_id as reconciliation_id,
        ti.item_type,
        ti.reconciliation_class,
        ti.txn_id,
        ti.device_id,
        case when ti.reconciliation_class in ('matched', 'amount_variance') then r.batch_id end as batch_id,
        case when ti.reconciliation_class in ('matched', 'amount_variance') then r.line_no end as line_no,
        ti.txn_amount_cents,
        case when ti.reconciliation_class in ('matched', 'amount_variance') then r.amount_cents end as settled_amount_cents,
        ti.txn_ts,
        case when ti.reconciliation_class in ('matched', 'amount_variance') then r.settled_ts end as settled_ts,
        ti.txn_date as reconciliation_date,
        ti.clearing_line_count
    from txn_items as ti
    left join ranked as r on r.txn_id = ti.txn_id and r.rank_in_txn = 1
),

line_rows as (
    select
        'line:' || l.clearing_line_id as reconciliation_id,
        'clearing_line' as item_type,
        case
            when not l.is_txn_known then 'unmatched_settlement'
            when ti.reconciliation_class = 'ambiguous' then 'ambiguous'
            else 'duplicate'
        end as reconciliation_class,
        l.txn_id,
        ti.device_id,
        l.batch_id,
        l.line_no,
        cast(null as bigint) as txn_amount_cents,
        l.amount_cents as settled_amount_cents,
        ti.txn_ts,
        l.settled_ts,
        l.settled_date as reconciliation_date,
        cast(null as bigint) as clearing_line_count
    from lines as l
    left join ranked as r on r.batch_id = l.batch_id and r.line_no = l.line_no
    left join txn_items as ti on ti.txn_id = l.txn_id
    where not l.is_txn_known
       or ti.reconciliation_class = 'ambiguous'
       or r.rank_in_txn > 1
)

select * from txn_rows
union all
select * from line_rows
