select device_id, device_type, nullif(trim(hub_id), '') as hub_id, location_id, neighbourhood_id,
       _file_sha256 as source_file_sha256, _loaded_at as loaded_at
from {{ source('raw', 'devices') }}
qualify row_number() over (partition by device_id order by _loaded_at desc) = 1
