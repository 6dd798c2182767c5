-- Device → hub → neighbourhood. The hub's neighbourhood wins over the device registry's own
-- neighbourhood_id (a hub device stands in its hub); devices off-hub keep their own.
select
    d.device_id,
    d.device_type,
    d.hub_id,
    d.location_id,
    coalesce(h.neighbourhood_id, d.neighbourhood_id) as neighbourhood_id
from {{ ref('stg_devices') }} as d
left join {{ ref('stg_hubs') }} as h on h.hub_id = d.hub_id
