{#- not_null constraints of enforced contracts on Spark (Sail): dbt-spark declares them with `alter table ... change
    column ... set not null`, which Sail does not run; here the table just written is checked instead, and the
    model fails when a constrained column holds a null (the Delta schema keeps the columns nullable). -#}
{% macro spark__alter_column_set_constraints(relation, column_dict) -%}
    {%- set checked = [] -%}
    {%- set counters = [] -%}
    {%- for column_name in column_dict -%}
        {%- for constraint in column_dict[column_name]['constraints'] if constraint.type == 'not_null' -%}
            {%- do checked.append(column_name) -%}
            {%- do counters.append('count_if(' ~ column_name ~ ' is null)') -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- if checked -%}
        {%- set counts = run_query('select ' ~ (counters | join(', ')) ~ ' from ' ~ relation) -%}
        {%- for column_name in checked -%}
            {%- if counts.columns[loop.index0].values()[0] != 0 -%}
                {{ exceptions.raise_compiler_error(relation ~ '.' ~ column_name ~ ' holds nulls: it has a not_null constraint') }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
