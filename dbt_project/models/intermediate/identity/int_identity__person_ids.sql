-- The person id of every identifier, stable across runs. A component keeps the previous person id that most
-- of its identifiers held (ties: the person first seen earliest, then the smallest id); a previous id survives
-- in one component only, the one holding most of its identifiers. Any other component gets a new id: a hash
-- of its smallest identifier and of the id that identifier held before.

with

components as (

    select * from {{ ref('int_identity__components') }}

),

previous_map as (

    select * from {{ ref('int_identity__previous_person_map') }}

),

members as (

    select
        components.identifier_type,
        components.identifier,
        components.component_key,
        components.linked_at,
        previous_map.person_id as previous_person_id
    from components
    left join previous_map
        on components.identifier_type = previous_map.identifier_type
        and components.identifier = previous_map.identifier

),

previous_persons as (

    select person_id, min(first_seen) as first_seen
    from previous_map
    group by person_id

),

candidates as (

    select
        members.component_key,
        members.previous_person_id,
        previous_persons.first_seen,
        count(*) as carried
    from members
    inner join previous_persons
        on members.previous_person_id = previous_persons.person_id
    group by members.component_key, members.previous_person_id, previous_persons.first_seen

),

ranked_homes as (

    select
        *,
        row_number() over (
            partition by previous_person_id order by carried desc, component_key asc
        ) as home_rank
    from candidates

),

home_components as (

    -- where each previous person id could survive: the component holding most of its identifiers
    select component_key, previous_person_id, first_seen, carried
    from ranked_homes
    where home_rank = 1

),

ranked_survivors as (

    select
        component_key,
        previous_person_id,
        row_number() over (
            partition by component_key order by carried desc, first_seen asc, previous_person_id asc
        ) as survivor_rank
    from home_components

),

survivors as (

    select component_key, previous_person_id as person_id
    from ranked_survivors
    where survivor_rank = 1

),

new_ids as (

    select
        component_key,
        'p_' || left({{ dbt.hash("component_key || '|' || coalesce(previous_person_id, '')") }}, 20) as person_id
    from members
    where identifier_type || ':' || identifier = component_key

),

final as (

    select
        members.identifier_type,
        members.identifier,
        coalesce(survivors.person_id, new_ids.person_id) as person_id,
        members.previous_person_id,
        members.component_key,
        members.linked_at
    from members
    left join survivors on members.component_key = survivors.component_key
    inner join new_ids on members.component_key = new_ids.component_key

)

select * from final
