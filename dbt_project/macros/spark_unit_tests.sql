{#- Unit tests on Spark (Sail): the union of the actual and the expected rows comes back to the client as Arrow
    string views, which the pyspark client cannot convert; selecting from it as a subquery gives plain strings. -#}
{% macro spark__get_unit_test_sql(main_sql, expected_fixture_sql, expected_column_names) -%}
select * from (
    {{ default__get_unit_test_sql(main_sql, expected_fixture_sql, expected_column_names) }}
) as unit_test_rows
where true
{%- endmacro %}
