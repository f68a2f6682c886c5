-- What the over-merging guards cut, and why: identifier values over their fan-out limit (all their edges are
-- dropped) and devices whose edges reach several people (they are not attached to any of them).
with

fanout_cuts as (

    select * from {{ ref('int_identity__fanout_cuts') }}

),

components as (

    select * from {{ ref('int_identity__components') }}

),

shared_devices as (

    select
        identifier_type,
        identifier,
        'person' as joined_type,
        reached_components as joined_count,
        1 as max_joined,
        identifier_type || ' reaches ' || cast(reached_components as {{ dbt.type_string() }}) || ' persons (limit 1)'
            as reason
    from components
    where reached_components > 1

),

final as (

    select 'fanout' as guard, * from fanout_cuts
    union all
    select 'shared_device' as guard, * from shared_devices

)

select * from final
