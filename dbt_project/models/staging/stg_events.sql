-- Events calendar. start_date/end_date are the local dates the event touches; an event that
-- ends exactly at local midnight does not touch the next day.
with source as (
    select * from {{ source('raw', 'events') }}
    qualify row_number() over (partition by event_id order by _loaded_at desc) = 1
)

select
    event_id,
    name,
    kind,
    venue_neighbourhood_id,
    start_time as start_ts,
    end_time as end_ts,
    {{ to_local_date('start_time') }} as start_date,
    greatest(
        {{ to_local_date('start_time') }},
        cast({{ to_local_ts('end_time') }} - interval 1 microsecond as date)
    ) as end_date,
    cast(expected_attendance as bigint) as expected_attendance,
    _file_sha256 as source_file_sha256,
    _loaded_at as loaded_at
from source
