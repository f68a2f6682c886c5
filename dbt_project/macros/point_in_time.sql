{#- Point-in-time helpers shared by the marts. Every instant is UTC; a snapshot dated T is taken at T 00:00 UTC. -#}

{#- The instant a snapshot dated `date_expr` is taken: midnight UTC at the start of that day (timestamptz). -#}
{% macro utc_midnight(date_expr) -%}
    {{ return(adapter.dispatch('utc_midnight')(date_expr)) }}
{%- endmacro %}

{#- DuckDB: timezone('UTC', <timestamp>) reads the wall-clock time as UTC and gives the instant. -#}
{% macro default__utc_midnight(date_expr) -%}
    timezone('UTC', cast({{ date_expr }} as timestamp))
{%- endmacro %}

{#- Spark: the instant whose epoch seconds are the date's days since 1970-01-01 times 86400. -#}
{% macro spark__utc_midnight(date_expr) -%}
    timestamp_seconds(cast(unix_date(cast({{ date_expr }} as date)) as bigint) * 86400)
{%- endmacro %}

{#- The UTC calendar date of a timestamptz, whatever the session time zone. -#}
{% macro utc_date(timestamp_expr) -%}
    {{ return(adapter.dispatch('utc_date')(timestamp_expr)) }}
{%- endmacro %}

{#- DuckDB: timezone('UTC', <timestamptz>) gives the UTC wall-clock time of the instant. -#}
{% macro default__utc_date(timestamp_expr) -%}
    cast(timezone('UTC', {{ timestamp_expr }}) as date)
{%- endmacro %}

{#- Spark: the day since 1970-01-01 the instant's epoch seconds fall in (to_date would use the session time zone). -#}
{% macro spark__utc_date(timestamp_expr) -%}
    date_from_unix_date(cast(floor(unix_seconds({{ timestamp_expr }}) / 86400) as int))
{%- endmacro %}

{#- True when the version `alias` of a history model was the live one at `instant`: [valid_from, valid_to). -#}
{% macro valid_at(alias, instant) -%}
    ({{ alias }}.valid_from <= {{ instant }} and ({{ alias }}.valid_to is null or {{ alias }}.valid_to > {{ instant }}))
{%- endmacro %}

{#- One row per day from start_date to end_date, both included: a set-returning expression for a select list
    (the rows are dates). -#}
{% macro date_series(start_date, end_date) -%}
    {{ return(adapter.dispatch('date_series')(start_date, end_date)) }}
{%- endmacro %}

{#- DuckDB: generate_series steps timestamps, unnest makes them rows. -#}
{% macro default__date_series(start_date, end_date) -%}
    cast(unnest(generate_series(
        cast({{ start_date }} as timestamp), cast({{ end_date }} as timestamp), interval 1 day
    )) as date)
{%- endmacro %}

{#- Spark: sequence of dates (step 1 day), explode makes them rows. -#}
{% macro spark__date_series(start_date, end_date) -%}
    explode(sequence(cast({{ start_date }} as date), cast({{ end_date }} as date), interval 1 day))
{%- endmacro %}
