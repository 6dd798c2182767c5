{% macro demand_dates(column_name) %}
    -- Every local date from the first to the last date with a locker deposit or pickup
    -- reading (a stray heartbeat past midnight does not open a new day): the calendar the
    -- daily marts are zero-filled on.
    select cast(d.generate_series as date) as {{ column_name }}
    from (
        select min(event_date) as first_date, max(event_date) as last_date
        from {{ ref('stg_telemetry') }}
        where is_demand_reading
    ) as bounds, generate_series(bounds.first_date, bounds.last_date, interval 1 day) as d
    where bounds.first_date is not null
{% endmacro %}
