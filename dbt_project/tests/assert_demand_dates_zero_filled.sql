-- Zero-fill: every neighbourhood × category pair has a row for every date of the range.
with per_pair as (
    select neighbourhood_id, category, count(*) as n
    from {{ ref('neighbourhood_demand_daily') }}
    group by all
),
span as (
    select datediff('day', min(demand_date), max(demand_date)) + 1 as days
    from {{ ref('neighbourhood_demand_daily') }}
)
select per_pair.*, span.days
from per_pair, span
where per_pair.n <> span.days
