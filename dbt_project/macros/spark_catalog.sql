{#- The Spark target's catalog. On Sail every Spark Connect session starts with an empty catalog (no schema, no
    table), so each dbt run registers the silver Delta tables as the tables the sources name
    (`silver.<system>__<table>`, the DuckDB warehouse's view names) before building anything. -#}

{#- on-run-start: on Spark, the schema `silver` and one external Delta table per source, at
    <LAKE_ROOT>/silver/<system>/<table> (the source's Dagster asset key); nothing on other targets. -#}
{% macro register_spark_sources() -%}
    {%- if execute and target.type == 'spark' -%}
        {%- set root = env_var('LAKE_ROOT', '../var/lake') -%}
        {%- set schemas = graph.sources.values() | map(attribute='schema') | unique | list -%}
        {%- for schema in schemas %}
            {%- do run_query('create schema if not exists ' ~ schema) -%}
        {%- endfor -%}
        {%- for source in graph.sources.values() -%}
            {%- set path = root ~ '/' ~ (source.meta.dagster.asset_key | join('/')) -%}
            {%- do run_query(
                'create table if not exists ' ~ source.schema ~ '.' ~ source.identifier
                ~ " using delta location '" ~ path ~ "'"
            ) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
