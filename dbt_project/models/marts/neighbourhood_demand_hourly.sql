{{ config(**incremental_by_date('demand_date', 'fail')) }}
-- Demand per neighbourhood × category × local date × local hour of day (0–23), zero-filled
-- like neighbourhood_demand_daily (same neighbourhoods, categories and dates). On the autumn
-- DST day local hour 2 holds both UTC hours; on the spring day it is an empty row.
with daily as (
    select neighbourhood_id, category, demand_date
    from {{ ref('neighbourhood_demand_daily') }}
    where {{ partition_filter('demand_date') }}
),

hours as (
    select cast(h.range as integer) as demand_hour from range(0, 24) as h
),

pickups as (
    select neighbourhood_id, category, event_date as demand_date, event_local_hour as demand_hour,
           sum(value) as units, count(*) as pickup_readings
    from {{ ref('int_telemetry_located') }}
    where reading_kind = 'locker_pickup' and not is_unknown_device
      and {{ partition_filter('event_date', 'demand_date') }}
    group by all
),

events as (
    select venue_neighbourhood_id as neighbourhood_id,
           {{ to_local_ts('start_ts') }} as start_local,
           {{ to_local_ts('end_ts') }} as end_local,
           expected_attendance
    from {{ ref('stg_events') }}
),

grid as (
    select d.neighbourhood_id, d.category, d.demand_date, h.demand_hour,
           cast(d.demand_date as timestamp) + to_hours(h.demand_hour) as hour_start_local
    from daily as d cross join hours as h
),

event_hours as (
    select g.neighbourhood_id, g.demand_date, g.demand_hour,
           count(*) as event_count, sum(e.expected_attendance) as event_attendance
    from (select distinct neighbourhood_id, demand_date, demand_hour, hour_start_local from grid) as g
    join events as e
      on e.neighbourhood_id = g.neighbourhood_id
     and e.start_local < g.hour_start_local + interval 1 hour
     and e.end_local > g.hour_start_local
    group by all
)

select
    g.neighbourhood_id,
    g.category,
    g.demand_date,
    g.demand_hour,
    g.hour_start_local,
    cast(coalesce(p.units, 0) as double) as units,
    cast(coalesce(p.pickup_readings, 0) as bigint) as pickup_readings,
    coalesce(eh.event_count, 0) > 0 as is_event_hour,
    cast(coalesce(eh.event_attendance, 0) as bigint) as event_attendance
from grid as g
left join pickups as p
    on p.neighbourhood_id = g.neighbourhood_id and p.category = g.category
   and p.demand_date = g.demand_date and p.demand_hour = g.demand_hour
left join event_hours as eh
    on eh.neighbourhood_id = g.neighbourhood_id and eh.demand_date = g.demand_date and eh.demand_hour = g.demand_hour
