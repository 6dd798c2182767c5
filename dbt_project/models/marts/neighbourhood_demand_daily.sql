{{ config(**incremental_by_date('demand_date', 'fail')) }}
-- Demand per neighbourhood × category × local date: the series the forecasts model.
-- Zero-filled: every neighbourhood with a hub (or with readings) × every category × every
-- date from the first to the last date with a locker deposit or pickup reading gets a row
-- (a stray heartbeat past midnight does not open a new day).
with dates as (
    {{ demand_dates('demand_date') }}
),

pickups as (
    select neighbourhood_id, category, event_date as demand_date,
           sum(pickup_units) as units, sum(pickup_readings) as pickup_readings
    from {{ ref('int_pickups_daily') }}
    where pickup_readings > 0
    group by all
),

neighbourhoods as (
    select neighbourhood_id from {{ ref('stg_hubs') }}
    union
    select neighbourhood_id from pickups where neighbourhood_id is not null
),

categories as (
    select category from {{ ref('stg_categories') }}
    union
    select category from pickups where category is not null
),

grid as (
    select n.neighbourhood_id, c.category, d.demand_date
    from neighbourhoods as n
    cross join categories as c
    cross join dates as d
    where {{ partition_filter('d.demand_date', 'demand_date') }}
),

event_days as (
    select
        e.venue_neighbourhood_id as neighbourhood_id,
        cast(d.generate_series as date) as demand_date,
        count(*) as event_count,
        sum(e.expected_attendance) as event_attendance
    from {{ ref('stg_events') }} as e,
        generate_series(e.start_date, e.end_date, interval 1 day) as d
    group by all
)

select
    g.neighbourhood_id,
    g.category,
    g.demand_date,
    cast(coalesce(p.units, 0) as double) as units,
    cast(coalesce(p.pickup_readings, 0) as bigint) as pickup_readings,
    coalesce(ev.event_count, 0) > 0 as is_event_day,
    cast(coalesce(ev.event_count, 0) as bigint) as event_count,
    cast(coalesce(ev.event_attendance, 0) as bigint) as event_attendance,
    cast(isodow(g.demand_date) as integer) as iso_weekday
from grid as g
left join pickups as p
    on p.neighbourhood_id = g.neighbourhood_id and p.category = g.category and p.demand_date = g.demand_date
left join event_days as ev
    on ev.neighbourhood_id = g.neighbourhood_id and ev.demand_date = g.demand_date
