-- Features of every person as of each snapshot date T, taken at T 00:00 UTC: a row dated T uses only facts
-- true and known before that instant (clicks with event_at and received_at before it, the versions of CRM
-- and shop rows live at it), so data added later never changes it. Incremental: a run adds the dates after the
-- latest one present; given the half-open window [snapshot_from, snapshot_until) as vars (a Dagster daily
-- partition), it replaces the rows of the dates in that window instead. Persons come from the current
-- identity map, but an identifier counts for T only if it was linked to its person before T (linked_at), so a
-- re-run or a full refresh restates the row; only a merge of persons changes their earlier rows.

with

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

person_events as (

    select * from {{ ref('int_marts__person_events') }}

),

orders_history as (

    select * from {{ ref('stg_shop__orders_history') }}

),

activities_history as (

    select * from {{ ref('stg_crm__activities_history') }}

),

consents_history as (

    select * from {{ ref('stg_crm__consents_history') }}

),

contacts_history as (

    select * from {{ ref('stg_crm__contacts_history') }}

),

customers_history as (

    select * from {{ ref('stg_shop__customers_history') }}

),

snapshot_days as (

    select {{ date_series('first_snapshot_date', 'last_snapshot_date') }} as snapshot_date
    from data_window

),

snapshots as (

    select
        snapshot_date,
        {{ utc_midnight('snapshot_date') }} as snapshot_at
    from snapshot_days
    {% if var('snapshot_from', none) is not none %}
    where snapshot_date >= cast('{{ var("snapshot_from") }}' as date)
        and snapshot_date < cast('{{ var("snapshot_until") }}' as date)
    {% elif is_incremental() %}
    where snapshot_date > (select max(snapshot_date) from {{ this }})
    {% endif %}

),

persons as (

    select
        person_id,
        min(linked_at) as first_linked_at
    from identity_person_map
    group by person_id

),

person_snapshots as (

    select
        snapshots.snapshot_date,
        snapshots.snapshot_at,
        persons.person_id
    from snapshots
    inner join persons on persons.first_linked_at < snapshots.snapshot_at

),

-- clicks: a day's events counted by the day they happened, the day they were received and the day their
-- identifier was linked to the person

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

    -- per snapshot, the days of the last 90 whose events had been received and linked before it
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

engagement as (

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

),

-- category affinity: the most viewed or added category over the last 30 days

category_events as (

    select
        snapshots.snapshot_date,
        person_events.person_id,
        person_events.category,
        count(*) as category_event_count
    from snapshots
    inner join person_events
        on person_events.received_at < snapshots.snapshot_at
        and person_events.linked_at < snapshots.snapshot_at
        and person_events.event_at < snapshots.snapshot_at
        and person_events.event_at >= {{ dbt.dateadd('day', -30, 'snapshots.snapshot_at') }}
    where person_events.category is not null
    group by snapshots.snapshot_date, person_events.person_id, person_events.category

),

ranked_categories as (

    select
        snapshot_date,
        person_id,
        category,
        category_event_count / sum(category_event_count) over (
            partition by snapshot_date, person_id
        ) as category_share,
        row_number() over (
            partition by snapshot_date, person_id order by category_event_count desc, category
        ) as category_rank
    from category_events

),

category_affinity as (

    select
        snapshot_date,
        person_id,
        category as top_category,
        category_share as top_category_share
    from ranked_categories
    where category_rank = 1

),

-- orders: the version of each order live at the snapshot; cancelled and refunded ones do not count

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

order_summary as (

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

),

-- CRM activities known at the snapshot: campaign touches and the e-mails among them

known_activities as (

    select
        snapshots.snapshot_date,
        snapshots.snapshot_at,
        contacts.person_id,
        activities_history.activity_type,
        activities_history.channel,
        activities_history.sent_at
    from snapshots
    inner join activities_history
        on {{ valid_at('activities_history', 'snapshots.snapshot_at') }}
        and activities_history.sent_at < snapshots.snapshot_at
    inner join identity_person_map as contacts
        on contacts.identifier_type = 'crm_contact_id'
        and contacts.identifier = cast(activities_history.contact_id as {{ dbt.type_string() }})
        and contacts.linked_at < snapshots.snapshot_at
    where activities_history.change_op <> 'd'
        and activities_history.activity_type = 'campaign_touch'

),

campaign_summary as (

    select
        snapshot_date,
        person_id,
        max(sent_at) as last_campaign_touch_at,
        count(*) filter (
            where channel = 'email' and sent_at >= {{ dbt.dateadd('day', -30, 'snapshot_at') }}
        ) as email_sent_count_30d
    from known_activities
    group by snapshot_date, person_id

),

-- tenure: since the earliest creation, known at the snapshot, of the person's CRM contacts and shop accounts

known_accounts as (

    select
        snapshots.snapshot_date,
        contacts.person_id,
        contacts_history.created_at
    from snapshots
    inner join contacts_history
        on {{ valid_at('contacts_history', 'snapshots.snapshot_at') }}
        and contacts_history.created_at < snapshots.snapshot_at
    inner join identity_person_map as contacts
        on contacts.identifier_type = 'crm_contact_id'
        and contacts.identifier = cast(contacts_history.contact_id as {{ dbt.type_string() }})
        and contacts.linked_at < snapshots.snapshot_at
    where contacts_history.change_op <> 'd'

    union all

    select
        snapshots.snapshot_date,
        shop_customers.person_id,
        customers_history.created_at
    from snapshots
    inner join customers_history
        on {{ valid_at('customers_history', 'snapshots.snapshot_at') }}
        and customers_history.created_at < snapshots.snapshot_at
    inner join identity_person_map as shop_customers
        on shop_customers.identifier_type = 'shop_customer_id'
        and shop_customers.identifier = cast(customers_history.customer_id as {{ dbt.type_string() }})
        and shop_customers.linked_at < snapshots.snapshot_at
    where customers_history.change_op <> 'd'

),

tenure as (

    select
        snapshot_date,
        person_id,
        min(created_at) as customer_since_at
    from known_accounts
    group by snapshot_date, person_id

),

-- consent per channel: the version live at the snapshot; across a person's contacts the latest choice wins,
-- and a revocation wins a tie

ranked_consents as (

    select
        snapshots.snapshot_date,
        contacts.person_id,
        consents_history.channel,
        consents_history.status,
        rank() over (
            partition by snapshots.snapshot_date, contacts.person_id, consents_history.channel
            order by consents_history.updated_at desc
        ) as recency_rank
    from snapshots
    inner join consents_history
        on {{ valid_at('consents_history', 'snapshots.snapshot_at') }}
    inner join identity_person_map as contacts
        on contacts.identifier_type = 'crm_contact_id'
        and contacts.identifier = cast(consents_history.contact_id as {{ dbt.type_string() }})
        and contacts.linked_at < snapshots.snapshot_at
    where consents_history.change_op <> 'd'

),

known_consents as (

    select snapshot_date, person_id, channel, status
    from ranked_consents
    where recency_rank = 1

),

consent_flags as (

    select
        snapshot_date,
        person_id,
        bool_and(status = 'granted') filter (where channel = 'email') as has_email_consent,
        bool_and(status = 'granted') filter (where channel = 'sms') as has_sms_consent,
        bool_and(status = 'granted') filter (where channel = 'push') as has_push_consent,
        bool_and(status = 'granted') filter (where channel = 'profiling') as has_profiling_consent
    from known_consents
    group by snapshot_date, person_id

),

final as (

    select
        person_snapshots.snapshot_date,
        person_snapshots.person_id,
        {{ dbt.datediff('order_summary.last_order_at', 'person_snapshots.snapshot_at', 'day') }}
            as days_since_last_order,
        coalesce(order_summary.order_count, 0) as order_count,
        coalesce(order_summary.order_count_30d, 0) as order_count_30d,
        cast(coalesce(order_summary.monetary_value, 0) as decimal(18, 2)) as monetary_value,
        cast(coalesce(order_summary.monetary_value_30d, 0) as decimal(18, 2)) as monetary_value_30d,
        cast(coalesce(engagement.event_count_1d, 0) as bigint) as event_count_1d,
        cast(coalesce(engagement.event_count_7d, 0) as bigint) as event_count_7d,
        cast(coalesce(engagement.event_count_30d, 0) as bigint) as event_count_30d,
        cast(coalesce(engagement.event_count_90d, 0) as bigint) as event_count_90d,
        coalesce(engagement.active_days_30d, 0) as active_days_30d,
        cast(coalesce(engagement.product_view_count_30d, 0) as bigint) as product_view_count_30d,
        coalesce(engagement.cart_abandoned_days_30d, 0) as cart_abandoned_days_30d,
        {{ dbt.datediff('engagement.last_cart_abandoned_date', 'person_snapshots.snapshot_date', 'day') }}
            as days_since_cart_abandoned,
        coalesce(campaign_summary.email_sent_count_30d, 0) as email_sent_count_30d,
        cast(coalesce(engagement.email_click_count_30d, 0) as bigint) as email_click_count_30d,
        engagement.email_click_count_30d / nullif(campaign_summary.email_sent_count_30d, 0)
            as email_click_rate_30d,
        category_affinity.top_category,
        category_affinity.top_category_share,
        {{ dbt.datediff('campaign_summary.last_campaign_touch_at', 'person_snapshots.snapshot_at', 'day') }}
            as days_since_campaign_touch,
        coalesce(consent_flags.has_email_consent, false) as has_email_consent,
        coalesce(consent_flags.has_sms_consent, false) as has_sms_consent,
        coalesce(consent_flags.has_push_consent, false) as has_push_consent,
        {{ dbt.datediff('tenure.customer_since_at', 'person_snapshots.snapshot_at', 'day') }} as tenure_days,
        cast(order_summary.monetary_value / order_summary.order_count as decimal(18, 2)) as average_order_value,
        engagement.cart_abandon_rate_90d,
        coalesce(consent_flags.has_profiling_consent, true) as has_profiling_consent
    from person_snapshots
    left join order_summary
        on person_snapshots.snapshot_date = order_summary.snapshot_date
        and person_snapshots.person_id = order_summary.person_id
    left join engagement
        on person_snapshots.snapshot_date = engagement.snapshot_date
        and person_snapshots.person_id = engagement.person_id
    left join category_affinity
        on person_snapshots.snapshot_date = category_affinity.snapshot_date
        and person_snapshots.person_id = category_affinity.person_id
    left join campaign_summary
        on person_snapshots.snapshot_date = campaign_summary.snapshot_date
        and person_snapshots.person_id = campaign_summary.person_id
    left join consent_flags
        on person_snapshots.snapshot_date = consent_flags.snapshot_date
        and person_snapshots.person_id = consent_flags.person_id
    left join tenure
        on person_snapshots.snapshot_date = tenure.snapshot_date
        and person_snapshots.person_id = tenure.person_id

)

select * from final
