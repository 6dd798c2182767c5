{#- Date-partitioned incremental rebuilds.

    Every big model is `incremental` with `delete+insert` on its date column. On an
    incremental run it rebuilds
      * the dates in var `rebuild_dates` (a list of YYYY-MM-DD strings), or
        in the window `rebuild_from`..`rebuild_to`;
      * every date the target does not hold yet (late data for a new day is never lost);
    and, when no rebuild var is given at all, every date (same result as a full refresh,
    without dropping the table). On a full refresh / first run: everything. -#}

{% macro rebuild_date_list() -%}
    {%- set raw = var('rebuild_dates', none) -%}
    {%- if raw is none or raw == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {#- A string is refused rather than split: one accepted form keeps callers and tests honest. -#}
    {%- if raw is string or raw is mapping or raw is not iterable -%}
        {{ exceptions.raise_compiler_error("rebuild_dates must be a list of YYYY-MM-DD dates, e.g. {\"rebuild_dates\": [\"2026-01-10\"]}; got " ~ (raw | string)) }}
    {%- endif -%}
    {%- set dates = [] -%}
    {%- for d in raw -%}
        {%- set s = (d | string).strip() -%}
        {%- if s -%}
            {%- if not modules.re.match('^\d{4}-\d{2}-\d{2}$', s) -%}
                {{ exceptions.raise_compiler_error("rebuild_dates: '" ~ s ~ "' is not a YYYY-MM-DD date") }}
            {%- endif -%}
            {%- do dates.append(s) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(dates) }}
{%- endmacro %}

{% macro rebuild_requested() -%}
    {{ return(rebuild_date_list() is not none or var('rebuild_from', none) is not none or var('rebuild_to', none) is not none) }}
{%- endmacro %}

{#- SQL predicate on `column` (a DATE) selecting the partitions this run builds. -#}
{% macro partition_filter(column, this_column=none) -%}
    {%- set this_column = this_column or column -%}
    {%- if not is_incremental() or not rebuild_requested() -%}
        true
    {%- else -%}
        {%- set dates = rebuild_date_list() -%}
        {%- set lo = var('rebuild_from', none) -%}
        {%- set hi = var('rebuild_to', none) -%}
        (
            {{ column }} not in (select distinct {{ this_column }} from {{ this }} where {{ this_column }} is not null)
            {%- if dates is not none and dates | length > 0 %}
            or {{ column }} in ({% for d in dates %}date '{{ d }}'{{ ", " if not loop.last }}{% endfor %})
            {%- endif %}
            {%- if lo is not none or hi is not none %}
            or {{ column }} between {{ "date '" ~ lo ~ "'" if lo is not none else "date '0001-01-01'" }}
                               and {{ "date '" ~ hi ~ "'" if hi is not none else "date '9999-12-31'" }}
            {%- endif %}
        )
    {%- endif -%}
{%- endmacro %}
