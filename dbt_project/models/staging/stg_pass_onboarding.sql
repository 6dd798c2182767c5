select
    pass_id,
    pass_type,
    home_neighbourhood_id,
    cast(birth_year as bigint) as birth_year,
    issued_at as issued_ts,
    {{ to_local_date('issued_at') }} as issued_date,
    cast(date_trunc('month', {{ to_local_date('issued_at') }}) as date) as issue_month,
    residency_verified_at as residency_verified_ts,
    payment_verified_at as payment_verified_ts,
    accessibility_verified_at as accessibility_verified_ts,
    _file_sha256 as source_file_sha256,
    _loaded_at as loaded_at
from {{ source('raw', 'pass_onboarding') }}
qualify row_number() over (partition by pass_id order by _loaded_at desc) = 1
