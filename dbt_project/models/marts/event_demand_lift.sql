-- Demand around each event against the same weekday without an event, per venue
-- neighbourhood × category and event day. Baseline: mean units on the same ISO weekday over
-- the days of the data range on which the neighbourhood had no event.
with demand as (
    select * from {{ ref('neighbourhood_demand_daily') }}
),

baseline as (
    select neighbourhood_id, category, iso_weekday,
           avg(units) as baseline_units, count(*) as baseline_days
    from demand
    where not is_event_day
    group by all
),

event_days as (
    select e.event_id, e.kind, e.venue_neighbourhood_id as neighbourhood_id, e.expected_attendance,
           cast(d.generate_series as date) as demand_date
    from {{ ref('stg_events') }} as e,
        generate_series(e.start_date, e.end_date, interval 1 day) as d
)

select
    ed.event_id,
    ed.kind as event_kind,
    ed.neighbourhood_id,
    dm.category,
    ed.demand_date,
    dm.iso_weekday,
    cast(ed.expected_attendance as bigint) as expected_attendance,
    cast(dm.event_count as bigint) as events_that_day,
    cast(dm.units as double) as units,
    cast(b.baseline_units as double) as baseline_units,
    cast(coalesce(b.baseline_days, 0) as bigint) as baseline_days,
    cast(dm.units - b.baseline_units as double) as lift_units,
    cast(case when b.baseline_units > 0 then dm.units / b.baseline_units end as double) as lift_ratio
from event_days as ed
join demand as dm on dm.neighbourhood_id = ed.neighbourhood_id and dm.demand_date = ed.demand_date
left join baseline as b
    on b.neighbourhood_id = dm.neighbourhood_id and b.category = dm.category and b.iso_weekday = dm.iso_weekday
