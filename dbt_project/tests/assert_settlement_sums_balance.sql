-- Attached to settlement_reconciliation_daily in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'settlement_reconciliation_daily'}}}) }}
-- Sums balance: the daily reconciliation adds up to every transaction and every clearing line,
-- each counted exactly once.
with daily as (
    select sum(transactions) as txns, sum(clearing_lines) as lines,
           sum(txn_amount_cents) as charged, sum(settled_amount_cents) as settled
    from {{ ref('settlement_reconciliation_daily') }}
),
txns as (select count(*) as n, coalesce(sum(amount_cents), 0) as cents from {{ ref('stg_transactions') }}),
lines as (select count(*) as n, coalesce(sum(amount_cents), 0) as cents from {{ ref('stg_clearing_lines') }})
select *
from daily, txns, lines
where coalesce(daily.txns, 0) <> txns.n
   or coalesce(daily.lines, 0) <> lines.n
   or coalesce(daily.charged, 0) <> txns.cents
   or coalesce(daily.settled, 0) <> lines.cents
