-- Device micro-payments, de-duplicated on txn_id.
with source as (
    select * from {{ source('raw', 'transactions') }}
    qualify row_number() over (partition by txn_id order by _loaded_at, _line) = 1
)

select
    txn_id,
    device_id,
    pass_id,
    cast(amount_cents as bigint) as amount_cents,
    currency,
    txn_time as txn_ts,
    event_ts,
    event_date as txn_date,
    _file_sha256 as source_file_sha256,
    _line as source_line,
    _loaded_at as loaded_at
from source
