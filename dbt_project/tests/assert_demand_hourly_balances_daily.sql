-- Attached to neighbourhood_demand_hourly in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'neighbourhood_demand_hourly'}}}) }}
-- The hourly mart adds up to the daily mart, cell by cell.
with hourly as (
    select neighbourhood_id, category, demand_date, sum(units) as units, count(*) as hours
    from {{ ref('neighbourhood_demand_hourly') }}
    group by all
)
select d.neighbourhood_id, d.category, d.demand_date, d.units, h.units as hourly_units, h.hours
from {{ ref('neighbourhood_demand_daily') }} as d
full outer join hourly as h
  on h.neighbourhood_id = d.neighbourhood_id and h.category = d.category and h.demand_date = d.demand_date
where h.units is null or d.units is null or abs(h.units - d.units) > 1e-6 or h.hours <> 24
