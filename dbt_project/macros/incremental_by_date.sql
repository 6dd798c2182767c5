{#-
  The config every date-partitioned incremental model shares: one local date is the unit
  that is deleted and re-inserted (delete+insert on that column), so a rebuild of a date
  replaces it whole. Returns the dict for `config(**incremental_by_date(...))`: the model
  keeps the config() call itself, because config() is only reliably bound inside a model's
  own rendering, while a macro that returns plain data works at parse time in every dbt 1.x.
  on_schema_change differs by layer: staging/intermediate follow their sources
  ('sync_all_columns'); marts have contracts and must fail loudly ('fail').
-#}
{% macro incremental_by_date(date_column, on_schema_change) %}
  {{ return({
      'materialized': 'incremental',
      'incremental_strategy': 'delete+insert',
      'unique_key': date_column,
      'on_schema_change': on_schema_change,
  }) }}
{% endmacro %}
