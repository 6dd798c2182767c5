-- Attached to hub_utilisation_daily in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'hub_utilisation_daily'}}}) }}
-- The stock estimate stays physical: never negative, a hub's stock over its total space
-- at most 1.2 on any day, and a hub × category's mean stock over its capacity at most 1.2
-- (one busy day may overfill a category's share of the hub, a month may not).
select hub_id, category, activity_date, 'negative' as why
from {{ ref('hub_utilisation_daily') }}
where closing_stock_units < 0 or stock_utilisation_ratio < 0
union all
select hub_id, null, activity_date, 'hub over 1.2 × its space'
from {{ ref('hub_utilisation_daily') }}
group by hub_id, activity_date
having sum(capacity_units) > 0 and sum(closing_stock_units) / sum(capacity_units) > 1.2
union all
select hub_id, category, null, 'mean ratio over 1.2'
from {{ ref('hub_utilisation_daily') }}
group by hub_id, category
having avg(stock_utilisation_ratio) > 1.2
