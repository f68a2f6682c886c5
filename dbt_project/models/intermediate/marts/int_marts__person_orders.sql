-- The shop orders that count as a conversion (not cancelled, not refunded), attributed to persons through
-- identity_person_map; the one definition every mart that counts orders or revenue reads.

with

orders as (

    select * from {{ ref('stg_shop__orders') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

final as (

    select
        customers.person_id,
        orders.order_id,
        orders.created_at,
        orders.total_amount
    from orders
    inner join identity_person_map as customers
        on customers.identifier_type = 'shop_customer_id'
        and customers.identifier = cast(orders.customer_id as {{ dbt.type_string() }})
    where orders.status not in ('cancelled', 'refunded')

)

select * from final
