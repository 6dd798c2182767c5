-- Hub utilisation per hub × category × local date: deposits, pickups, an estimated stock,
-- dwell time, occupancy against capacity and stock-outs.
--
-- Stock is estimated from the flows: net_t = deposits − pickups; the stock cannot go below 0
-- (a shortage is served reactively from the depot), so it is the walk reflected at 0:
--   stock_t = C_t − min(0, min_{k≤t} C_k)   with C_t the cumulative net flow.
-- A stock-out day is one whose pickups exceed the opening stock plus the day's deposits
-- (shortage_units > 0). Dwell time follows Little's law: mean stock / pickups per day.
-- A table, not incremental: a late reading on day D changes the stock of every later day.
with hubs as (
    select h.hub_id, h.neighbourhood_id, c.category, coalesce(cap.capacity_units, 0) as capacity_units
    from {{ ref('stg_hubs') }} as h
    cross join {{ ref('stg_categories') }} as c
    left join {{ ref('stg_hub_capacity') }} as cap on cap.hub_id = h.hub_id and cap.category = c.category
),

dates as (
    {{ demand_dates('activity_date') }}
),

flows as (
    select
        h.hub_id, h.neighbourhood_id, h.category, h.capacity_units, d.activity_date,
        coalesce(p.deposit_units, 0) as deposit_units,
        coalesce(p.pickup_units, 0) as pickup_units,
        coalesce(p.deposit_readings, 0) as deposit_readings,
        coalesce(p.pickup_readings, 0) as pickup_readings,
        sum(coalesce(p.deposit_units, 0) - coalesce(p.pickup_units, 0)) over w as cum_net
    from hubs as h
    cross join dates as d
    left join {{ ref('int_pickups_daily') }} as p
        on p.hub_id = h.hub_id and p.category = h.category and p.event_date = d.activity_date
    window w as (partition by h.hub_id, h.category order by d.activity_date rows unbounded preceding)
),

stock as (
    select
        *,
        cum_net - least(0, min(cum_net) over w) as closing_stock_units
    from flows
    window w as (partition by hub_id, category order by activity_date rows unbounded preceding)
),

stock_open as (
    select
        *,
        coalesce(lag(closing_stock_units) over (partition by hub_id, category order by activity_date), 0)
            as opening_stock_units
    from stock
),

occupancy as (
    select hub_id, event_date as activity_date,
           avg(value) as avg_occupancy_ratio, max(value) as max_occupancy_ratio, count(*) as occupancy_readings
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
    cast(s.deposit_readings as bigint) as deposit_readings,
    cast(s.pickup_readings as bigint) as pickup_readings,
    cast(s.opening_stock_units as double) as opening_stock_units,
    cast(s.closing_stock_units as double) as closing_stock_units,
    cast(greatest(0, s.pickup_units - s.opening_stock_units - s.deposit_units) as double) as shortage_units,
    s.pickup_units > s.opening_stock_units + s.deposit_units as is_stock_out,
    cast(s.capacity_units as bigint) as capacity_units,
    cast(case when s.capacity_units > 0 then s.closing_stock_units / s.capacity_units end as double)
        as stock_utilisation_ratio,
    cast(case when s.pickup_units > 0
              then (s.opening_stock_units + s.closing_stock_units) / 2.0 / s.pickup_units end as double)
        as est_dwell_days,
    cast(o.avg_occupancy_ratio as double) as avg_occupancy_ratio,
    cast(o.max_occupancy_ratio as double) as max_occupancy_ratio,
    cast(coalesce(o.occupancy_readings, 0) as bigint) as occupancy_readings
from stock_open as s
left join occupancy as o on o.hub_id = s.hub_id and o.activity_date = s.activity_date
