-- Clearing batch headers, one row per batch.
with source as (
    select * from {{ source('raw', 'clearing_batches') }}
    qualify row_number() over (partition by batch_id order by _loaded_at) = 1
)

select
    batch_id,
    cast(line_count as bigint) as line_count,
    cast(total_cents as bigint) as total_cents,
    cleared_at as cleared_ts,
    {{ to_local_date('cleared_at') }} as cleared_date,
    _file_sha256 as source_file_sha256,
    _loaded_at as loaded_at
from source
