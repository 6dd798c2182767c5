-- Clearing lines, de-duplicated on (batch_id, line_no).
with source as (
    select * from {{ source('raw', 'clearing') }}
    qualify row_number() over (partition by batch_id, line_no order by _loaded_at, _line) = 1
)

select
    batch_id,
    line_no,
    batch_id || ':' || cast(line_no as varchar) as clearing_line_id,
    txn_id,
    cast(amount_cents as bigint) as amount_cents,
    settled_at as settled_ts,
    event_date as settled_date,
    _file_sha256 as source_file_sha256,
    _line as source_line,
    _loaded_at as loaded_at
from source
