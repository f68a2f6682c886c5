-- One row per person and snapshot date being built: the persons with an identifier linked before the snapshot.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

persons as (

    select
        person_id,
        min(linked_at) as first_linked_at
    from identity_person_map
    group by person_id

),

final as (

    select
        snapshots.snapshot_date,
        snapshots.snapshot_at,
        persons.person_id
    from snapshots
    inner join persons on persons.first_linked_at < snapshots.snapshot_at

)

select * from final
