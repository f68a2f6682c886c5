-- Every identifier the sources have seen, with when it was first and last seen: the nodes of the graph.

with

contacts as (

    select * from {{ ref('stg_crm__contacts_history') }}

),

customers as (

    select * from {{ ref('stg_shop__customers_history') }}

),

events as (

    select * from {{ ref('stg_clickstream__events') }}

),

edges as (

    select * from {{ ref('int_identity__edges') }}

),

sightings as (

    select
        'crm_contact_id' as identifier_type,
        cast(contact_id as {{ dbt.type_string() }}) as identifier,
        valid_from as seen_at
    from contacts
    union all
    select 'shop_customer_id', cast(customer_id as {{ dbt.type_string() }}), valid_from
    from customers
    union all
    select 'anonymous_id', anonymous_id, event_at
    from events
    where anonymous_id is not null
    union all
    select 'app_user_id', user_id, event_at
    from events
    where user_id is not null
    union all
    select left_type, left_identifier, first_seen
    from edges
    union all
    select left_type, left_identifier, last_seen
    from edges
    union all
    select right_type, right_identifier, first_seen
    from edges
    union all
    select right_type, right_identifier, last_seen
    from edges

),

final as (

    select
        identifier_type,
        identifier,
        min(seen_at) as first_seen,
        max(seen_at) as last_seen
    from sightings
    group by identifier_type, identifier

)

select * from final
