-- Clickstream events attributed to persons: the signed-in user id is the stronger link and wins over the
-- device's anonymous id; events linked to no person are left out.

with

events as (

    select * from {{ ref('stg_clickstream__events') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

final as (

    select
        coalesce(users.person_id, devices.person_id) as person_id,
        case when users.person_id is not null then users.linked_at else devices.linked_at end as linked_at,
        events.message_id,
        events.message_type,
        events.event_name,
        events.anonymous_id,
        events.sdk_source,
        events.category,
        events.event_at,
        events.received_at
    from events
    left join identity_person_map as users
        on users.identifier_type = 'app_user_id'
        and users.identifier = events.user_id
    left join identity_person_map as devices
        on devices.identifier_type = 'anonymous_id'
        and devices.identifier = events.anonymous_id
    where coalesce(users.person_id, devices.person_id) is not null

)

select * from final
