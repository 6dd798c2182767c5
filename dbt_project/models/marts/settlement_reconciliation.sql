-- Every device transaction matched to a clearing line or classified, and every clearing line
-- accounted for exactly once (rules in int_settlement_items). Adds the age of each item and
-- whether the transaction breached the settlement target (var settlement_target_hours, 24).
--
-- Age: settled transactions → settled_ts − txn_ts; unsettled ones → as_of − txn_ts, where
-- as_of is var reconciliation_as_of or the latest transaction/settlement time in the data
-- (deterministic: a rebuild gives the same answer whenever it runs).
{%- set as_of = var('reconciliation_as_of', none) %}
with items as (
    select * from {{ ref('int_settlement_items') }}
),

as_of as (
    {% if as_of is not none -%}
    select cast('{{ as_of }}' as timestamp) as as_of_ts
    {%- else -%}
    select coalesce(greatest(max(txn_ts), max(settled_ts)), max(txn_ts), max(settled_ts)) as as_of_ts
    from items
    {%- endif %}
),

aged as (
    select
        i.*,
        a.as_of_ts,
        i.reconciliation_class in ('matched', 'amount_variance') as is_settled,
        case
            when i.item_type = 'transaction' and i.reconciliation_class in ('matched', 'amount_variance')
                then epoch(i.settled_ts) - epoch(i.txn_ts)
            when i.item_type = 'transaction'
                then epoch(a.as_of_ts) - epoch(i.txn_ts)
            else epoch(a.as_of_ts) - epoch(i.settled_ts)
        end / 3600.0 as age_hours
    from items as i
    cross join as_of as a
)

select
    reconciliation_id,
    item_type,
    reconciliation_class,
    txn_id,
    aged.device_id,
    d.hub_id,
    d.neighbourhood_id,
    batch_id,
    line_no,
    txn_amount_cents,
    settled_amount_cents,
    case when reconciliation_class in ('matched', 'amount_variance')
         then settled_amount_cents - txn_amount_cents end as variance_cents,
    txn_ts,
    settled_ts,
    reconciliation_date,
    cast(clearing_line_count as bigint) as clearing_line_count,
    is_settled,
    cast(age_hours as double) as age_hours,
    coalesce(item_type = 'transaction' and age_hours > {{ var('settlement_target_hours') }}, false)
        as breached_settlement_target,
    as_of_ts
from aged
left join {{ ref('int_devices_located') }} as d on d.device_id = aged.device_id
