{#- The warehouse on DuckLake (target `lake`) has no PRIMARY KEY, UNIQUE, CHECK or FOREIGN KEY
    constraints and no indexes. There an enforced contract keeps its column names, types and
    NOT NULL; keys and ranges stay guarded by the models' dbt tests (`unique`, the
    `accepted_range`-style tests), which run on both backends. The DuckDB file keeps every
    constraint, as before. -#}
{% macro duckdb__get_table_columns_and_constraints() -%}
  {%- if adapter.is_ducklake(this) -%}
    {%- set columns = {} -%}
    {%- for name, column in model['columns'].items() -%}
      {%- set kept = [] -%}
      {%- for c in column.get('constraints', []) -%}
        {%- if c['type'] == 'not_null' -%}{%- do kept.append(c) -%}{%- endif -%}
      {%- endfor -%}
      {%- set lake_column = column.copy() -%}
      {%- do lake_column.update({'constraints': kept}) -%}
      {%- do columns.update({name: lake_column}) -%}
    {%- endfor -%}
    {%- set rendered = adapter.render_raw_columns_constraints(raw_columns=columns) -%}
    (
    {% for c in rendered -%}
      {{ c }}{{ "," if not loop.last }}
    {% endfor -%}
    )
  {%- else -%}
    {{ return(table_columns_and_constraints()) }}
  {%- endif -%}
{%- endmacro %}
