{# The mean of a ratio column summed as whole 1/10,000ths: integer sums are exact, so the
   result does not depend on the order the rows are read in (a floating-point sum does, in
   its last digit, and a rebuild must give the same table). #}
{% macro exact_mean(column) -%}
    (sum(cast(round({{ column }} * 10000) as bigint)) / count({{ column }}) / 10000.0)
{%- endmacro %}
