select hub_id, category, cast(capacity_units as bigint) as capacity_units,
       _file_sha256 as source_file_sha256, _loaded_at as loaded_at
from {{ source('raw', 'hub_capacity') }}
qualify row_number() over (partition by hub_id, category order by _loaded_at desc) = 1
