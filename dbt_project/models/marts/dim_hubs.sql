select hub_id, neighbourhood_id, name
from {{ ref('stg_hubs') }}
