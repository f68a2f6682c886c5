-- Clicks per person and snapshot: a day's events counted by the day they happened, the day they were received
-- and the day their identifier was linked to the person; a snapshot sees the days of the last 90 whose events had
-- been received and linked before it.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

person_events as (

    select * from {{ ref('int_marts__person_events') }}

),

daily_events as (

    select
        person_id,
        {{ utc_date('event_at') }} as event_date,
        {{ utc_date('received_at') }} as received_date,
        {{ utc_date('linked_at') }} as linked_date,
        count(*) as event_count,
        count(*) filter (where event_name = 'Product Viewed') as product_view_count,
        count(*) filter (where event_name = 'Product Added') as product_added_count,
        count(*) filter (where event_name = 'Order Completed') as order_completed_count,
        count(*) filter (where event_name = 'Email Link Clicked') as email_click_count
    from person_events
    group by person_id, {{ utc_date('event_at') }}, {{ utc_date('received_at') }}, {{ utc_date('linked_at') }}

),

known_event_days as (

    select
        snapshots.snapshot_date,
        daily_events.person_id,
        daily_events.event_date,
        sum(daily_events.event_count) as event_count,
        sum(daily_events.product_view_count) as product_view_count,
        sum(daily_events.product_added_count) as product_added_count,
        sum(daily_events.order_completed_count) as order_completed_count,
        sum(daily_events.email_click_count) as email_click_count
    from snapshots
    inner join daily_events
        on daily_events.received_date < snapshots.snapshot_date
        and daily_events.linked_date < snapshots.snapshot_date
        and daily_events.event_date < snapshots.snapshot_date
        and daily_events.event_date >= {{ dbt.dateadd('day', -90, 'snapshots.snapshot_date') }}
    group by snapshots.snapshot_date, daily_events.person_id, daily_events.event_date

),

final as (

    select
        snapshot_date,
        person_id,
        sum(event_count) filter (
            where event_date >= {{ dbt.dateadd('day', -1, 'snapshot_date') }}
        ) as event_count_1d,
        sum(event_count) filter (
            where event_date >= {{ dbt.dateadd('day', -7, 'snapshot_date') }}
        ) as event_count_7d,
        sum(event_count) filter (
            where event_date >= {{ dbt.dateadd('day', -30, 'snapshot_date') }}
        ) as event_count_30d,
        sum(event_count) as event_count_90d,
        count(*) filter (
            where event_date >= {{ dbt.dateadd('day', -30, 'snapshot_date') }}
        ) as active_days_30d,
        sum(product_view_count) filter (
            where event_date >= {{ dbt.dateadd('day', -30, 'snapshot_date') }}
        ) as product_view_count_30d,
        count(*) filter (
            where event_date >= {{ dbt.dateadd('day', -30, 'snapshot_date') }}
            and product_added_count > 0
            and order_completed_count = 0
        ) as cart_abandoned_days_30d,
        max(event_date) filter (
            where product_added_count > 0 and order_completed_count = 0
        ) as last_cart_abandoned_date,
        count(*) filter (
            where product_added_count > 0 and order_completed_count = 0
        ) / nullif(count(*) filter (where product_added_count > 0), 0) as cart_abandon_rate_90d,
        sum(email_click_count) filter (
            where event_date >= {{ dbt.dateadd('day', -30, 'snapshot_date') }}
        ) as email_click_count_30d
    from known_event_days
    group by snapshot_date, person_id

)

select * from final
