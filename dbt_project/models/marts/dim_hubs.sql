select hub_id, neighbourhood_id, name, address, cast(lat as double) as lat, cast(lon as double) as lon
from {{ ref('stg_hubs') }}
