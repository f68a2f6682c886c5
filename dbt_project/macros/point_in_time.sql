{#- Point-in-time helpers shared by the marts. Every instant is UTC; a snapshot dated T is taken at T 00:00 UTC. -#}

{#- The instant a snapshot dated `date_expr` is taken: midnight UTC at the start of that day (timestamptz). -#}
{% macro utc_midnight(date_expr) -%}
    timezone('UTC', cast({{ date_expr }} as timestamp))
{%- endmacro %}

{#- The UTC calendar date of a timestamptz, whatever the session time zone. -#}
{% macro utc_date(timestamp_expr) -%}
    cast(timezone('UTC', {{ timestamp_expr }}) as date)
{%- endmacro %}

{#- True when the version `alias` of a history model was the live one at `instant`: [valid_from, valid_to). -#}
{% macro valid_at(alias, instant) -%}
    ({{ alias }}.valid_from <= {{ instant }} and ({{ alias }}.valid_to is null or {{ alias }}.valid_to > {{ instant }}))
{%- endmacro %}
