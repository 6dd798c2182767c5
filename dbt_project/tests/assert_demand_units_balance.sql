-- Attached to neighbourhood_demand_daily in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'neighbourhood_demand_daily'}}}) }}
-- Sums balance: every unit of a distinct locker_pickup reading of a registered device in
-- staging lands in neighbourhood_demand_daily (none lost to an unknown hub, category or date).
with staging as (
    select coalesce(sum(t.value), 0) as units, count(*) as readings
    from {{ ref('stg_telemetry') }} as t
    join {{ ref('stg_devices') }} as d on d.device_id = t.device_id
    where t.reading_kind = 'locker_pickup'
),
mart as (
    select coalesce(sum(units), 0) as units, coalesce(sum(pickup_readings), 0) as readings
    from {{ ref('neighbourhood_demand_daily') }}
)
select staging.units as staging_units, mart.units as mart_units,
       staging.readings as staging_readings, mart.readings as mart_readings
from staging, mart
where abs(staging.units - mart.units) > 1e-6 or staging.readings <> mart.readings
