-- The identity map: the person of every identifier, and since when it belongs to that person. Every downstream
-- model joins through it.

with

person_ids as (

    select * from {{ ref('int_identity__person_ids') }}

),

identifiers as (

    select * from {{ ref('int_identity__identifiers') }}

),

final as (

    select
        person_ids.identifier_type,
        person_ids.identifier,
        person_ids.person_id,
        identifiers.first_seen,
        identifiers.last_seen,
        person_ids.linked_at
    from person_ids
    inner join identifiers
        on person_ids.identifier_type = identifiers.identifier_type
        and person_ids.identifier = identifiers.identifier

)

select * from final
