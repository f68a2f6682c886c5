{#- Small SQL helpers for what dbt's cross-database macros (dbt.hash, dbt.type_string, dbt.dateadd, ...) do not
    cover. The default implementation is the DuckDB one; the spark__ one is for a Spark SQL target. -#}

{#- The type of an instant (a point in time, shown in any time zone): timestamptz in DuckDB. -#}
{% macro type_timestamp_tz() -%}
    {{ return(adapter.dispatch('type_timestamp_tz')()) }}
{%- endmacro %}

{% macro default__type_timestamp_tz() -%}
    timestamp with time zone
{%- endmacro %}

{#- Spark: TIMESTAMP is an instant (local-time-zone semantics); TIMESTAMP_NTZ would be the wall-clock type. -#}
{% macro spark__type_timestamp_tz() -%}
    timestamp
{%- endmacro %}

{#- Aggregate: the distinct non-null values of `measure`, sorted, joined by `delimiter_text` (null when none). -#}
{% macro listagg_distinct(measure, delimiter_text="','") -%}
    {{ return(adapter.dispatch('listagg_distinct')(measure, delimiter_text)) }}
{%- endmacro %}

{% macro default__listagg_distinct(measure, delimiter_text) -%}
    string_agg(distinct {{ measure }}, {{ delimiter_text }} order by {{ measure }})
{%- endmacro %}

{#- Spark: dbt.listagg ignores its order_by_clause there, so sort the set of values before joining them. -#}
{% macro spark__listagg_distinct(measure, delimiter_text) -%}
    case
        when count({{ measure }}) > 0
            then array_join(array_sort(collect_set({{ measure }})), {{ delimiter_text }})
    end
{%- endmacro %}

{#- Spark: dbt.dateadd on Spark goes through unix seconds and to_timestamp, which drops the fraction of a second
    and which Sail reads as microseconds; timestampadd keeps the instant whole on both Spark and Sail. -#}
{% macro spark__dateadd(datepart, interval, from_date_or_timestamp) -%}
    timestampadd({{ datepart }}, {{ interval }}, {{ from_date_or_timestamp }})
{%- endmacro %}
