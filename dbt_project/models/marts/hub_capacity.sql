select c.hub_id, h.neighbourhood_id, c.category, c.capacity_units
from {{ ref('stg_hub_capacity') }} as c
join {{ ref('stg_hubs') }} as h on h.hub_id = c.hub_id
