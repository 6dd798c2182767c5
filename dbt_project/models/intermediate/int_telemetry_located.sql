{{ config(**incremental_by_date('event_date', 'sync_all_columns')) }}
-- Telemetry readings placed at a hub and a neighbourhood: the device registry is
-- authoritative for the hub, the gateway's hub_id is the fallback for unknown devices.
select
    t.device_id,
    t.seq,
    t.reading_kind,
    t.category,
    t.value,
    t.unit,
    t.event_ts,
    t.event_date,
    t.event_local_ts,
    t.event_local_hour,
    t.is_clock_skewed,
    t.is_demand_reading,
    coalesce(d.hub_id, t.hub_id) as hub_id,
    coalesce(h.neighbourhood_id, d.neighbourhood_id) as neighbourhood_id,
    d.device_id is null as is_unknown_device,
    (d.hub_id is not null and t.hub_id is not null and d.hub_id <> t.hub_id) as is_hub_mismatch
from {{ ref('stg_telemetry') }} as t
left join {{ ref('int_devices_located') }} as d on d.device_id = t.device_id
left join {{ ref('stg_hubs') }} as h on h.hub_id = coalesce(d.hub_id, t.hub_id)
where {{ partition_filter('t.event_date', 'event_date') }}
