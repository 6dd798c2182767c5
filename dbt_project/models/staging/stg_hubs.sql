select hub_id, neighbourhood_id, name, address, lat, lon,
       _file_sha256 as source_file_sha256, _loaded_at as loaded_at
from {{ source('raw', 'hubs') }}
qualify row_number() over (partition by hub_id order by _loaded_at desc) = 1
