-- Features of every person as of each snapshot date T, taken at T 00:00 UTC: a row dated T uses only facts
-- true and known before that instant (clicks with event_at and received_at before it, the versions of CRM
-- and shop rows live at it), so data added later never changes it. Incremental: a run adds the dates after the
-- latest one present; given the half-open window [snapshot_from, snapshot_until) as vars (a Dagster daily
-- partition), it replaces the rows of the dates in that window instead (int_features__snapshots). Persons come
-- from the current identity map, but an identifier counts for T only if it was linked to its person before T
-- (linked_at), so a re-run or a full refresh restates the row; only a merge of persons changes their earlier
-- rows. Each feature group is an ephemeral model of intermediate/features/ over the dates being built; this
-- model joins them to the persons of each date.

with

person_snapshots as (

    select * from {{ ref('int_features__person_snapshots') }}

),

order_summary as (

    select * from {{ ref('int_features__orders') }}

),

engagement as (

    select * from {{ ref('int_features__engagement') }}

),

category_affinity as (

    select * from {{ ref('int_features__category_affinity') }}

),

campaign_summary as (

    select * from {{ ref('int_features__campaigns') }}

),

consent_flags as (

    select * from {{ ref('int_features__consent') }}

),

tenure as (

    select * from {{ ref('int_features__tenure') }}

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
        -- in whole cents, half a cent up, by integer arithmetic: a decimal division is a double in DuckDB and exact
        -- in Spark, which then round the same half cent differently
        cast(
            cast(
                floor(
                    (2 * cast(order_summary.monetary_value * 100 as bigint) + order_summary.order_count)
                    / (2 * nullif(order_summary.order_count, 0))
                ) as decimal(18, 2)
            ) * 0.01 as decimal(18, 2)
        ) as average_order_value,
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
