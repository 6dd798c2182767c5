select category, name, cast(under_cost as double) as under_cost, cast(over_cost as double) as over_cost,
       _file_sha256 as source_file_sha256, _loaded_at as loaded_at
from {{ source('raw', 'categories') }}
qualify row_number() over (partition by category order by _loaded_at desc) = 1
