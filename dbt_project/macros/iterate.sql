{#- Iterative SQL for engines without dbt Python models (the Spark target): a relation rewritten step after step
    until a step changes no row. -#}

{#- Materialize `initial_sql` as the table `<model>__<name>`, then run `step_sql` (in which `{previous}` names the
    table of the last step) again and again until a step gives the same rows as the one before, at most
    `max_steps` times (an error beyond); the relation holding the fixpoint. Each step writes a Delta table beside
    the model's (`<location_root>/<model>__<name>_<0|1>`), replaced two steps later. Rows are compared on
    `key` (their one key column) and `value` (null-safe). -#}
{% macro iterate_until_unchanged(name, initial_sql, step_sql, key, value, max_steps=100) -%}
    {%- set tables = [] -%}
    {%- for parity in [0, 1] -%}
        {%- set identifier = model.name ~ '__' ~ name ~ '_' ~ parity -%}
        {%- do tables.append(api.Relation.create(schema=this.schema, identifier=identifier, type='table')) -%}
    {%- endfor -%}
    {%- set state = namespace(current=0, done=false, steps=0) -%}
    {%- do run_query(work_table_sql(tables[0], initial_sql)) -%}
    {%- for step in range(max_steps) if not state.done -%}
        {%- set previous = tables[state.current] -%}
        {%- set following = tables[1 - state.current] -%}
        {%- do run_query(work_table_sql(following, step_sql | replace('{previous}', previous.render()))) -%}
        {%- set changed = run_query(
            'select count(*) from ' ~ following.render() ~ ' as following inner join ' ~ previous.render()
            ~ ' as previous on following.' ~ key ~ ' = previous.' ~ key
            ~ ' where not (following.' ~ value ~ ' <=> previous.' ~ value ~ ')'
        ).columns[0].values()[0] -%}
        {%- set state.current = 1 - state.current -%}
        {%- set state.steps = step + 1 -%}
        {%- if changed == 0 -%}
            {%- set state.done = true -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not state.done -%}
        {{ exceptions.raise_compiler_error(name ~ ' did not converge in ' ~ max_steps ~ ' steps') }}
    {%- endif -%}
    {%- do log(model.name ~ ': ' ~ name ~ ' converged in ' ~ state.steps ~ ' steps') -%}
    {{ return(tables[state.current]) }}
{%- endmacro %}

{#- `create or replace table` of a work table as Delta beside the model's table. -#}
{% macro work_table_sql(relation, sql) -%}
    create or replace table {{ relation.render() }} using delta
    location '{{ config.get('location_root') }}/{{ relation.identifier }}'
    as {{ sql }}
{%- endmacro %}
