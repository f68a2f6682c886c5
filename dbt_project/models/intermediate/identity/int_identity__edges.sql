-- Every piece of evidence that two identifiers belong to one person, one row per pair, evidence and source.

with

contacts as (

    select * from {{ ref('stg_crm__contacts_history') }}

),

customers as (

    select * from {{ ref('stg_shop__customers_history') }}

),

orders as (

    select * from {{ ref('stg_shop__orders') }}

),

activities as (

    select * from {{ ref('stg_crm__activities') }}

),

events as (

    select * from {{ ref('stg_clickstream__events') }}

),

token_types as (

    -- the two contact details a row may carry: a row per detail type (unpivoted by a cross join and a case,
    -- which both engines run; Sail has no correlated lateral subquery)
    select 'email_token' as identifier_type
    union all
    select 'phone_token'

),

contact_tokens as (

    select
        'crm_contact_id' as left_type,
        cast(token.contact_id as {{ dbt.type_string() }}) as left_identifier,
        token.identifier_type as right_type,
        token.identifier as right_identifier,
        'crm_contact_' || token.identifier_type as evidence,
        'crm' as source,
        token.valid_from as seen_at,
        token.valid_from as known_at
    from (
        select
            contacts.contact_id,
            contacts.valid_from,
            token_types.identifier_type,
            case token_types.identifier_type
                when 'email_token' then contacts.email_token else contacts.phone_token
            end as identifier
        from contacts
        cross join token_types
    ) as token
    where token.identifier is not null

),

customer_tokens as (

    select
        'shop_customer_id' as left_type,
        cast(token.customer_id as {{ dbt.type_string() }}) as left_identifier,
        token.identifier_type as right_type,
        token.identifier as right_identifier,
        'shop_customer_' || token.identifier_type as evidence,
        'shop' as source,
        token.valid_from as seen_at,
        token.valid_from as known_at
    from (
        select
            customers.customer_id,
            customers.valid_from,
            token_types.identifier_type,
            case token_types.identifier_type
                when 'email_token' then customers.email_token else customers.phone_token
            end as identifier
        from customers
        cross join token_types
    ) as token
    where token.identifier is not null

),

signed_in_devices as (

    -- identify calls and every other message sent by a signed-in app or browser
    select
        'app_user_id' as left_type,
        user_id as left_identifier,
        'anonymous_id' as right_type,
        anonymous_id as right_identifier,
        case when message_type = 'identify' then 'identify' else 'signed_in_event' end as evidence,
        'clickstream' as source,
        event_at as seen_at,
        received_at as known_at
    from events
    where user_id is not null and anonymous_id is not null

),

seen_user_ids as (

    select distinct user_id as identifier from events
    where user_id is not null

),

seen_anonymous_ids as (

    select distinct anonymous_id as identifier from events
    where anonymous_id is not null

),

alias_targets as (

    -- previousId names an earlier user id or an anonymous id (Segment spec): it is whichever the clickstream
    -- has seen it as, both when it was seen as both, and an anonymous id when it was seen as neither. Decided
    -- over all the messages each time the graph is built, so the order in which they arrived does not matter.
    select
        aliases.previous_id,
        target.identifier_type
    from (
        select distinct previous_id from events
        where message_type = 'alias' and previous_id is not null
    ) as aliases
    left join seen_user_ids as users on aliases.previous_id = users.identifier
    left join seen_anonymous_ids as devices on aliases.previous_id = devices.identifier
    cross join (
        select 'app_user_id' as identifier_type
        union all
        select 'anonymous_id'
    ) as target
    where (target.identifier_type = 'app_user_id' and users.identifier is not null)
        or (
            target.identifier_type = 'anonymous_id' and (devices.identifier is not null or users.identifier is null)
        )

),

aliases as (

    select
        'app_user_id' as left_type,
        events.user_id as left_identifier,
        alias_targets.identifier_type as right_type,
        events.previous_id as right_identifier,
        'alias' as evidence,
        'clickstream' as source,
        events.event_at as seen_at,
        events.received_at as known_at
    from events
    inner join alias_targets
        on events.previous_id = alias_targets.previous_id
    where events.message_type = 'alias' and events.user_id is not null
        and not (alias_targets.identifier_type = 'app_user_id' and events.previous_id = events.user_id)

),

trait_tokens as (

    -- contact details given in traits, held by the user (or, before sign-in, the device) that sent them
    select
        case when token.user_id is not null then 'app_user_id' else 'anonymous_id' end as left_type,
        coalesce(token.user_id, token.anonymous_id) as left_identifier,
        token.identifier_type as right_type,
        token.identifier as right_identifier,
        'traits_' || token.identifier_type as evidence,
        'clickstream' as source,
        token.event_at as seen_at,
        token.received_at as known_at
    from (
        select
            events.user_id,
            events.anonymous_id,
            events.event_at,
            events.received_at,
            token_types.identifier_type,
            case token_types.identifier_type
                when 'email_token' then coalesce(events.traits_email_token, events.context_traits_email_token)
                else coalesce(events.traits_phone_token, events.context_traits_phone_token)
            end as identifier
        from events
        cross join token_types
    ) as token
    where token.identifier is not null and coalesce(token.user_id, token.anonymous_id) is not null

),

order_events as (

    -- Order Completed (server side, signed-in user) and Checkout Started (the device) name the shop order
    select
        case when events.user_id is not null then 'app_user_id' else 'anonymous_id' end as left_type,
        coalesce(events.user_id, events.anonymous_id) as left_identifier,
        'shop_customer_id' as right_type,
        cast(orders.customer_id as {{ dbt.type_string() }}) as right_identifier,
        case
            when events.event_name = 'Order Completed' then 'order_completed'
            else 'checkout_started'
        end as evidence,
        'shop+clickstream' as source,
        events.event_at as seen_at,
        -- a checkout names its order before the order exists
        greatest(events.received_at, orders.created_at) as known_at
    from events
    inner join orders
        on events.order_id = cast(orders.order_id as {{ dbt.type_string() }})
    where events.event_name in ('Order Completed', 'Checkout Started')
        and coalesce(events.user_id, events.anonymous_id) is not null

),

email_click_throughs as (

    -- an e-mail link clicked on a device: the CRM activity names the contact the e-mail was sent to
    select
        'anonymous_id' as left_type,
        events.anonymous_id as left_identifier,
        'crm_contact_id' as right_type,
        cast(activities.contact_id as {{ dbt.type_string() }}) as right_identifier,
        'email_click_through' as evidence,
        'crm+clickstream' as source,
        events.event_at as seen_at,
        events.received_at as known_at
    from events
    inner join activities
        on events.email_id = cast(activities.activity_id as {{ dbt.type_string() }})
    where events.event_name = 'Email Link Clicked'
        and events.anonymous_id is not null

),

evidence as (

    select * from contact_tokens
    union all
    select * from customer_tokens
    union all
    select * from signed_in_devices
    union all
    select * from aliases
    union all
    select * from trait_tokens
    union all
    select * from order_events
    union all
    select * from email_click_throughs

),

final as (

    select
        {{ dbt.hash("concat_ws('|', left_type, left_identifier, right_type, right_identifier, evidence)") }} as edge_id,
        left_type,
        left_identifier,
        right_type,
        right_identifier,
        evidence,
        source,
        min(seen_at) as first_seen,
        max(seen_at) as last_seen,
        min(known_at) as first_known_at,
        count(*) as observations
    from evidence
    group by left_type, left_identifier, right_type, right_identifier, evidence, source

)

select * from final
