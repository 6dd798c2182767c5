{{ config(**incremental_by_date('event_date', 'sync_all_columns')) }}
-- Device readings, typed and de-duplicated on (device_id, seq); one partition per local date.
with source as (
    select * from {{ source('raw', 'telemetry') }}
    where {{ partition_filter('event_date') }}
    qualify row_number() over (partition by device_id, seq order by _loaded_at, _line) = 1
)

select
    device_id,
    nullif(trim(hub_id), '') as hub_id,
    seq,
    kind as reading_kind,
    nullif(trim(category), '') as category,
    cast(value as double) as value,
    unit,
    device_time as device_ts,
    received_at as received_ts,
    event_ts,
    event_date,
    {{ to_local_ts('event_ts') }} as event_local_ts,
    cast(hour({{ to_local_ts('event_ts') }}) as integer) as event_local_hour,
    cast(clock_skew_s as double) as clock_skew_s,
    coalesce(is_clock_skewed, false) as is_clock_skewed,
    kind in ('locker_deposit', 'locker_pickup') as is_demand_reading,
    _file_sha256 as source_file_sha256,
    _line as source_line,
    _loaded_at as loaded_at
from source
