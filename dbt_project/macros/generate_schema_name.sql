{#- Custom schemas are used as-is: models land in `staging`, `intermediate`, `marts`
    (not `main_marts`), which is what the forecasts and the gateway query. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
