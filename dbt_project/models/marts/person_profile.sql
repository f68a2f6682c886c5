-- One row per person: contact tokens, consent per channel, lifecycle stage, orders, engagement, first and last seen.

with

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

consents as (

    select * from {{ ref('stg_crm__consents') }}

),

converting_orders as (

    select * from {{ ref('int_marts__person_orders') }}

),

sessions as (

    select * from {{ ref('person_sessions') }}

),

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

persons as (

    select
        person_id,
        max_by(identifier, last_seen) filter (where identifier_type = 'email_token') as email_token,
        max_by(identifier, last_seen) filter (where identifier_type = 'phone_token') as phone_token,
        count(*) filter (where identifier_type = 'crm_contact_id') as crm_contact_count,
        count(*) filter (where identifier_type = 'shop_customer_id') as shop_customer_count,
        count(*) filter (where identifier_type = 'anonymous_id') as device_count,
        min(first_seen) as first_seen_at,
        max(last_seen) as last_seen_at
    from identity_person_map
    group by person_id

),

ranked_consents as (

    select
        identity_person_map.person_id,
        consents.channel,
        consents.status,
        rank() over (
            partition by identity_person_map.person_id, consents.channel order by consents.updated_at desc
        ) as recency_rank
    from consents
    inner join identity_person_map
        on identity_person_map.identifier_type = 'crm_contact_id'
        and identity_person_map.identifier = cast(consents.contact_id as {{ dbt.type_string() }})

),

person_consents as (

    -- a person with several CRM contacts: the most recent choice per channel wins, a revocation wins a tie
    select person_id, channel, status
    from ranked_consents
    where recency_rank = 1

),

consent_flags as (

    select
        person_id,
        bool_and(status = 'granted') filter (where channel = 'email') as has_email_consent,
        bool_and(status = 'granted') filter (where channel = 'sms') as has_sms_consent,
        bool_and(status = 'granted') filter (where channel = 'push') as has_push_consent
    from person_consents
    group by person_id

),

person_orders as (

    select
        person_id,
        count(*) as order_count,
        sum(total_amount) as total_revenue,
        min(created_at) as first_order_at,
        max(created_at) as last_order_at
    from converting_orders
    group by person_id

),

person_engagement as (

    select
        sessions.person_id,
        count(*) as session_count,
        count(*) filter (
            where sessions.started_at >= {{ dbt.dateadd('day', -30, 'data_window.data_until') }}
        ) as session_count_30d,
        sum(sessions.event_count) as event_count,
        sum(sessions.product_view_count) as product_view_count,
        sum(sessions.email_click_count) as email_click_count,
        max(sessions.started_at) as last_session_at
    from sessions
    cross join data_window
    group by sessions.person_id

),

final as (

    select
        persons.person_id,
        persons.email_token,
        persons.phone_token,
        persons.crm_contact_count,
        persons.shop_customer_count,
        persons.device_count,
        coalesce(consent_flags.has_email_consent, false) as has_email_consent,
        coalesce(consent_flags.has_sms_consent, false) as has_sms_consent,
        coalesce(consent_flags.has_push_consent, false) as has_push_consent,
        case
            when person_orders.order_count is null then 'prospect'
            when person_orders.last_order_at < {{ dbt.dateadd('day', -60, 'data_window.data_until') }} then 'lapsed'
            when person_orders.order_count = 1 then 'new'
            else 'active'
        end as lifecycle_stage,
        coalesce(person_orders.order_count, 0) as order_count,
        coalesce(person_orders.total_revenue, 0) as total_revenue,
        person_orders.total_revenue / person_orders.order_count as average_order_value,
        person_orders.first_order_at,
        person_orders.last_order_at,
        coalesce(person_engagement.session_count, 0) as session_count,
        coalesce(person_engagement.session_count_30d, 0) as session_count_30d,
        coalesce(person_engagement.event_count, 0) as event_count,
        coalesce(person_engagement.product_view_count, 0) as product_view_count,
        coalesce(person_engagement.email_click_count, 0) as email_click_count,
        person_engagement.last_session_at,
        persons.first_seen_at,
        persons.last_seen_at
    from persons
    cross join data_window
    left join consent_flags on persons.person_id = consent_flags.person_id
    left join person_orders on persons.person_id = person_orders.person_id
    left join person_engagement on persons.person_id = person_engagement.person_id

)

select * from final
