-- Daily summary of settlement_reconciliation per local date × class. Its sums balance: over
-- all rows, charged = every transaction's amount, settled = every clearing line's amount.
select
    reconciliation_date,
    reconciliation_class,
    count(*) as items,
    count(*) filter (where item_type = 'transaction') as transactions,
    cast(count(batch_id) as bigint) as clearing_lines,
    cast(coalesce(sum(txn_amount_cents), 0) as bigint) as txn_amount_cents,
    cast(coalesce(sum(settled_amount_cents), 0) as bigint) as settled_amount_cents,
    cast(coalesce(sum(variance_cents), 0) as bigint) as variance_cents,
    count(*) filter (where breached_settlement_target) as breached_transactions
from {{ ref('settlement_reconciliation') }}
group by all
