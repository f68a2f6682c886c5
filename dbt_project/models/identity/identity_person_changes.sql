-- Every merge and split of persons between two runs, appended run after run.
-- A merge: a person absorbed into the surviving person id. A split: identifiers of a previous person that
-- went to another person.
-- On Spark: a Delta merge on the key (dbt-spark has no delete+insert, DuckDB's default with a unique_key).
{{ config(
    materialized="incremental",
    unique_key=["change_type", "person_id", "previous_person_id"],
    incremental_strategy=("merge" if target.type == "spark" else none),
) }}

with

person_ids as (

    select * from {{ ref('int_identity__person_ids') }}

),

moves as (

    select previous_person_id, person_id, count(*) as identifiers
    from person_ids
    where previous_person_id is not null
    group by previous_person_id, person_id

),

merged_persons as (

    select person_id
    from moves
    group by person_id
    having count(*) > 1

),

split_persons as (

    select previous_person_id
    from moves
    group by previous_person_id
    having count(*) > 1

),

changes as (

    select 'merge' as change_type, moves.*
    from moves
    inner join merged_persons on moves.person_id = merged_persons.person_id
    where moves.previous_person_id <> moves.person_id
    union all
    select 'split' as change_type, moves.*
    from moves
    inner join split_persons on moves.previous_person_id = split_persons.previous_person_id
    where moves.previous_person_id <> moves.person_id

),

final as (

    select
        change_type,
        person_id,
        previous_person_id,
        identifiers,
        cast('{{ run_started_at }}' as {{ type_timestamp_tz() }}) as changed_at,
        '{{ invocation_id }}' as invocation_id
    from changes

)

select * from final
