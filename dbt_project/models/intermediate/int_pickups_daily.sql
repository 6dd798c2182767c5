{{ config(**incremental_by_date('event_date', 'sync_all_columns')) }}
-- Pickups (and deposits, and returns: uncollected units the morning sweep takes out) per
-- hub × category × local day, from distinct readings of registered devices (a device
-- missing from `devices` breaks its contract: not a valid event).
select
    hub_id,
    neighbourhood_id,
    category,
    event_date,
    cast(coalesce(sum(value) filter (where reading_kind = 'locker_pickup'), 0) as double) as pickup_units,
    count(*) filter (where reading_kind = 'locker_pickup') as pickup_readings,
    cast(coalesce(sum(value) filter (where reading_kind = 'locker_deposit'), 0) as double) as deposit_units,
    count(*) filter (where reading_kind = 'locker_deposit') as deposit_readings,
    cast(coalesce(sum(value) filter (where reading_kind = 'locker_return'), 0) as double) as return_units,
    count(*) filter (where reading_kind = 'locker_return') as return_readings
from {{ ref('int_telemetry_located') }}
where (is_demand_reading or reading_kind = 'locker_return')
  and not is_unknown_device
  and {{ partition_filter('event_date') }}
group by all
