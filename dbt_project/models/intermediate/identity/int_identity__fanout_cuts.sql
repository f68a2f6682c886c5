-- Identifier values that join more people-level identifiers of one type than its limit allows
-- (a placeholder e-mail typed by staff, a switchboard phone number): they must glue nobody together.
with

edges as (

    select * from {{ ref('int_identity__edges') }}

),

limits as (

    select * from {{ ref('identity_fanout_limits') }}

),

both_directions as (

    select
        left_type as identifier_type,
        left_identifier as identifier,
        right_type as joined_type,
        right_identifier as joined
    from edges
    union all
    select right_type, right_identifier, left_type, left_identifier
    from edges

),

fanout as (

    select
        identifier_type,
        identifier,
        joined_type,
        count(distinct joined) as joined_count
    from both_directions
    group by identifier_type, identifier, joined_type

),

final as (

    select
        fanout.identifier_type,
        fanout.identifier,
        fanout.joined_type,
        fanout.joined_count,
        limits.max_joined,
        fanout.identifier_type || ' joins ' || cast(fanout.joined_count as {{ dbt.type_string() }}) || ' '
        || fanout.joined_type || ' values (limit ' || cast(limits.max_joined as {{ dbt.type_string() }}) || ')'
            as reason
    from fanout
    inner join limits
        on fanout.identifier_type = limits.identifier_type
        and fanout.joined_type = limits.joined_type
    where fanout.joined_count > limits.max_joined

)

select * from final
