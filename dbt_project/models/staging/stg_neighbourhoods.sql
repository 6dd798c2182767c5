select neighbourhood_id, name, cast(population as bigint) as population, cast(lat as double) as lat, cast(lon as double) as lon,
       _file_sha256 as source_file_sha256, _loaded_at as loaded_at
from {{ source('raw', 'neighbourhoods') }}
qualify row_number() over (partition by neighbourhood_id order by _loaded_at desc) = 1
