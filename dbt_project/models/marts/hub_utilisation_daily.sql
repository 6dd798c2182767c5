-- Hub utilisation per hub × category × local date: deposits, pickups, returns, a stock
-- estimate anchored to the lockers' own occupancy readings, dwell time, stock-outs.
--
-- Flows alone drift (a lost pickup or return reading is never corrected), so the stock is
-- anchored to what the lockers report:
-- 1. the flow walk per hub × category: net_t = deposits − pickups − returns, reflected at 0
--    (a shortage is served from the depot): walk_t = C_t − min(0, min_{k≤t} C_k);
-- 2. the counted stock of a night: the hub's mean occupancy reading while its lockers are
--    closed (from `locker_close_hour` to the morning sweep at `locker_sweep_hour`: nothing
--    moves then, so it is the day's closing stock) × the hub's total space, split over its
--    categories in proportion to their walks (by capacity when every walk is 0);
-- 3. closing stock = the walk plus the latest night's correction (counted − walk), so a
--    night with readings resets the stock to the count and a night without carries it on.
-- opening = yesterday's closing; shortage = pickups + returns beyond opening + deposits;
-- stock_adjustment_units = what the count changed: closing − (opening + deposits − pickups
-- − returns + shortage). Dwell time follows Little's law: mean stock / pickups per day.
-- A table, not incremental: a late reading on day D changes the stock of every later day.
with hubs as (
    select h.hub_id, h.neighbourhood_id, c.category, coalesce(cap.capacity_units, 0) as capacity_units,
           sum(coalesce(cap.capacity_units, 0)) over (partition by h.hub_id) as hub_space_units
    from {{ ref('stg_hubs') }} as h
    cross join {{ ref('stg_categories') }} as c
    left join {{ ref('stg_hub_capacity') }} as cap on cap.hub_id = h.hub_id and cap.category = c.category
),

dates as (
    {{ demand_dates('activity_date') }}
),

flows as (
    select
        h.hub_id, h.neighbourhood_id, h.category, h.capacity_units, h.hub_space_units, d.activity_date,
        coalesce(p.deposit_units, 0) as deposit_units,
        coalesce(p.pickup_units, 0) as pickup_units,
        coalesce(p.return_units, 0) as return_units,
        coalesce(p.deposit_readings, 0) as deposit_readings,
        coalesce(p.pickup_readings, 0) as pickup_readings,
        coalesce(p.return_readings, 0) as return_readings,
        sum(coalesce(p.deposit_units, 0) - coalesce(p.pickup_units, 0) - coalesce(p.return_units, 0)) over w as cum_net
    from hubs as h
    cross join dates as d
    left join {{ ref('int_pickups_daily') }} as p
        on p.hub_id = h.hub_id and p.category = h.category and p.event_date = d.activity_date
    window w as (partition by h.hub_id, h.category order by d.activity_date rows unbounded preceding)
),

walk as (
    select
        *,
        cum_net - least(0, min(cum_net) over w) as walk_units
    from flows
    window w as (partition by hub_id, category order by activity_date rows unbounded preceding)
),

night as (
    -- a reading after closing belongs to its day, one before the sweep to the day before
    select hub_id,
           case when event_local_hour >= {{ var('locker_close_hour') }} then event_date
                else cast(event_date - interval 1 day as date) end as activity_date,
           {{ exact_mean('value') }} as night_occupancy_ratio,
           count(*) as night_occupancy_readings
    from {{ ref('int_telemetry_located') }}
    where reading_kind = 'occupancy' and not is_unknown_device
      and (event_local_hour >= {{ var('locker_close_hour') }} or event_local_hour < {{ var('locker_sweep_hour') }})
    group by all
),

counted as (
    select
        w.*,
        n.night_occupancy_ratio,
        coalesce(n.night_occupancy_readings, 0) as night_occupancy_readings,
        n.night_occupancy_ratio * w.hub_space_units
            * case when sum(w.walk_units) over hub_day > 0 then w.walk_units / sum(w.walk_units) over hub_day
                   when w.hub_space_units > 0 then w.capacity_units / w.hub_space_units
                   else 0 end
            - w.walk_units as correction_units
    from walk as w
    left join night as n on n.hub_id = w.hub_id and n.activity_date = w.activity_date
    window hub_day as (partition by w.hub_id, w.activity_date)
),

stock as (
    select
        *,
        greatest(0, walk_units + coalesce(last_value(correction_units ignore nulls) over w, 0)) as closing_stock_units
    from counted
    window w as (partition by hub_id, category order by activity_date rows unbounded preceding)
),

stock_open as (
    select
        *,
        coalesce(lag(closing_stock_units) over (partition by hub_id, category order by activity_date), 0)
            as opening_stock_units
    from stock
),

balanced as (
    select
        *,
        greatest(0, pickup_units + return_units - opening_stock_units - deposit_units) as shortage_units
    from stock_open
),

occupancy as (
    select hub_id, event_date as activity_date,
           {{ exact_mean('value') }} as avg_occupancy_ratio, max(value) as max_occupancy_ratio, count(*) as occupancy_readings
    from {{ ref('int_telemetry_located') }}
    where reading_kind = 'occupancy' and not is_unknown_device
    group by all
)

select
    s.hub_id,
    s.neighbourhood_id,
    s.category,
    s.activity_date,
    cast(s.deposit_units as double) as deposit_units,
    cast(s.pickup_units as double) as pickup_units,
    cast(s.return_units as double) as return_units,
    cast(s.deposit_readings as bigint) as deposit_readings,
    cast(s.pickup_readings as bigint) as pickup_readings,
    cast(s.return_readings as bigint) as return_readings,
    cast(s.opening_stock_units as double) as opening_stock_units,
    cast(s.closing_stock_units as double) as closing_stock_units,
    cast(s.closing_stock_units - (s.opening_stock_units + s.deposit_units - s.pickup_units - s.return_units
                                  + s.shortage_units) as double) as stock_adjustment_units,
    cast(s.shortage_units as double) as shortage_units,
    s.shortage_units > 0 as is_stock_out,
    cast(s.capacity_units as bigint) as capacity_units,
    cast(case when s.capacity_units > 0 then s.closing_stock_units / s.capacity_units end as double)
        as stock_utilisation_ratio,
    cast(case when s.pickup_units > 0
              then (s.opening_stock_units + s.closing_stock_units) / 2.0 / s.pickup_units end as double)
        as est_dwell_days,
    cast(s.hub_space_units as bigint) as hub_space_units,
    cast(s.night_occupancy_ratio as double) as night_occupancy_ratio,
    cast(s.night_occupancy_readings as bigint) as night_occupancy_readings,
    cast(o.avg_occupancy_ratio as double) as avg_occupancy_ratio,
    cast(o.max_occupancy_ratio as double) as max_occupancy_ratio,
    cast(coalesce(o.occupancy_readings, 0) as bigint) as occupancy_readings
from balanced as s
left join occupancy as o on o.hub_id = s.hub_id and o.activity_date = s.activity_date
