-- Orders per person and snapshot: the version of each order live at the snapshot, of a shop customer linked to
-- the person before it; cancelled and refunded ones do not count.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

orders_history as (

    select * from {{ ref('stg_shop__orders_history') }}

),

known_orders as (

    select
        snapshots.snapshot_date,
        snapshots.snapshot_at,
        shop_customers.person_id,
        orders_history.created_at,
        orders_history.total_amount
    from snapshots
    inner join orders_history
        on {{ valid_at('orders_history', 'snapshots.snapshot_at') }}
        and orders_history.created_at < snapshots.snapshot_at
    inner join identity_person_map as shop_customers
        on shop_customers.identifier_type = 'shop_customer_id'
        and shop_customers.identifier = cast(orders_history.customer_id as {{ dbt.type_string() }})
        and shop_customers.linked_at < snapshots.snapshot_at
    where orders_history.change_op <> 'd'
        and orders_history.status not in ('cancelled', 'refunded')

),

final as (

    select
        snapshot_date,
        person_id,
        count(*) as order_count,
        count(*) filter (
            where created_at >= {{ dbt.dateadd('day', -30, 'snapshot_at') }}
        ) as order_count_30d,
        sum(total_amount) as monetary_value,
        sum(total_amount) filter (
            where created_at >= {{ dbt.dateadd('day', -30, 'snapshot_at') }}
        ) as monetary_value_30d,
        max(created_at) as last_order_at
    from known_orders
    group by snapshot_date, person_id

)

select * from final
