{# Per hub and night with occupancy readings: a stock over the hub's total space beside the
   night's occupancy the lockers report. `stock` is the per-row units to sum (the closing
   stock, or the flows alone); the tests comparing stock and count share this one query. #}
{% macro hub_nights(stock) -%}
    select hub_id, activity_date, sum({{ stock }}) / max(hub_space_units) as ratio,
           max(night_occupancy_ratio) as night_occupancy_ratio
    from {{ ref('hub_utilisation_daily') }}
    where night_occupancy_ratio is not null and hub_space_units > 0
    group by hub_id, activity_date
{%- endmacro %}
