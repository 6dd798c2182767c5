{#- Timestamps are stored as naive UTC. These turn them into the city's local wall-clock
    time / date explicitly (never through the session time zone). -#}
{% macro to_local_ts(column) -%}
    timezone('{{ var("city_tz") }}', timezone('UTC', {{ column }}))
{%- endmacro %}

{% macro to_local_date(column) -%}
    cast({{ to_local_ts(column) }} as date)
{%- endmacro %}
