select category, name, under_cost, over_cost
from {{ ref('stg_categories') }}
