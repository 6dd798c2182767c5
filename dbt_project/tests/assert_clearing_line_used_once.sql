-- Attached to settlement_reconciliation in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'settlement_reconciliation'}}}) }}
-- No clearing line is used twice, and none is forgotten.
with used as (
    select batch_id, line_no, count(*) as n
    from {{ ref('settlement_reconciliation') }}
    where batch_id is not null
    group by all
)
select l.batch_id, l.line_no, coalesce(u.n, 0) as times_used
from {{ ref('stg_clearing_lines') }} as l
full outer join used as u on u.batch_id = l.batch_id and u.line_no = l.line_no
where coalesce(u.n, 0) <> 1 or l.batch_id is null
