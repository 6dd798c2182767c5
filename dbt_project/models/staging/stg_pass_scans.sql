{{ config(**incremental_by_date('event_date', 'sync_all_columns')) }}
-- Pass scans, de-duplicated on scan_id, entitlements split into flags.
with source as (
    select * from {{ source('raw', 'pass_scans') }}
    where {{ partition_filter('event_date') }}
    qualify row_number() over (partition by scan_id order by _loaded_at, _line) = 1
)

select
    scan_id,
    pass_id,
    pass_type,
    location_id,
    device_id,
    scanned_at as scanned_ts,
    event_ts,
    event_date,
    {{ to_local_ts('event_ts') }} as event_local_ts,
    result as scan_result,
    result = 'accepted' as is_accepted,
    nullif(trim(reason), '') as reject_reason,
    nullif(trim(entitlements), '') as entitlements,
    coalesce(list_contains(string_split(entitlements, ';'), 'residency'), false) as has_residency,
    coalesce(list_contains(string_split(entitlements, ';'), 'payment'), false) as has_payment,
    coalesce(list_contains(string_split(entitlements, ';'), 'accessibility'), false) as has_accessibility,
    _file_sha256 as source_file_sha256,
    _line as source_line,
    _loaded_at as loaded_at
from source
