{#- Seeds on Spark: dbt-spark creates a seed's table with `create table ... location` and then inserts its rows;
    when the catalog does not know the table (a new Sail server, whose catalog lives in memory) but its Delta
    files are still at the location, Sail takes the existing table, so its rows are deleted before the insert. -#}
{% macro spark__create_csv_table(model, agate_table) -%}
    {%- set sql = dbt.spark__create_csv_table(model, agate_table) -%}
    {%- call statement('_') -%}
        delete from {{ this.render() }}
    {%- endcall -%}
    {{ return(sql) }}
{%- endmacro %}
