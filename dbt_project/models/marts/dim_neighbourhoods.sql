select neighbourhood_id, name, population, lat, lon
from {{ ref('stg_neighbourhoods') }}
