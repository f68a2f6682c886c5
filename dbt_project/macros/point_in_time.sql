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

{#- The incremental table of the daily feature snapshots, as a relation beside the model compiled now (the
    snapshot dates to build are worked out in an ephemeral model, which cannot ref the model that reads it). -#}
{% macro features_relation() -%}
    {{ return(adapter.get_relation(database=model.database, schema=model.schema, identifier='person_features_daily')) }}
{%- endmacro %}

{#- True when person_features_daily exists as a table and this run does not rebuild it from scratch: the run then
    adds the dates after its latest one (what is_incremental() says inside that model). -#}
{% macro features_built_before() -%}
    {%- if not execute -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set relation = features_relation() -%}
    {{ return(relation is not none and relation.type == 'table' and not should_full_refresh()) }}
{%- endmacro %}

{#- Spark's pre-hook of person_features_daily: on an incremental run given the window [snapshot_from,
    snapshot_until), the delete of the rows of its dates (which the run then appends again); nothing otherwise,
    the run adding only dates after the latest present (int_features__snapshots). -#}
{% macro delete_snapshot_window() -%}
    {%- if is_incremental() and var('snapshot_from', none) is not none -%}
        delete from {{ this }}
        where snapshot_date >= cast('{{ var("snapshot_from") }}' as date)
            and snapshot_date < cast('{{ var("snapshot_until") }}' as date)
    {%- endif -%}
{%- endmacro %}
