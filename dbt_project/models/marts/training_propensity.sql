-- The training set of the organic purchase propensity: one row per person and snapshot date with the features
-- as of the snapshot (T 00:00 UTC) and labels from the label horizon after it, [T, T + horizon), for people
-- never treated: no campaign touch (any action but no_action) before the end of the label window. Only
-- snapshots whose label window has ended before the latest loaded data are kept.

{% set horizon_days = var('label_horizon_days', 7) %}

with

features as (

    select * from {{ ref('person_features_daily') }}

),

person_activities as (

    select * from {{ ref('int_marts__person_activities') }}

),

person_orders as (

    select * from {{ ref('int_marts__person_orders') }}

),

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

snapshots as (

    select
        features.snapshot_date,
        features.person_id,
        {{ utc_midnight('features.snapshot_date') }} as snapshot_at,
        {{ dbt.dateadd('day', horizon_days, utc_midnight('features.snapshot_date')) }} as label_window_end_at
    from features
    cross join data_window
    where {{ dbt.dateadd('day', horizon_days, utc_midnight('features.snapshot_date')) }} <= data_window.data_until

),

first_touches as (

    select
        person_id,
        min(sent_at) as first_touch_at
    from person_activities
    where activity_type = 'campaign_touch'
    group by person_id

),

untreated as (

    select snapshots.*
    from snapshots
    left join first_touches on snapshots.person_id = first_touches.person_id
    where first_touches.first_touch_at is null
        or first_touches.first_touch_at >= snapshots.label_window_end_at

),

labels as (

    select
        untreated.snapshot_date,
        untreated.person_id,
        count(*) as order_count,
        sum(person_orders.total_amount) as revenue
    from untreated
    inner join person_orders
        on untreated.person_id = person_orders.person_id
        and person_orders.created_at >= untreated.snapshot_at
        and person_orders.created_at < untreated.label_window_end_at
    group by untreated.snapshot_date, untreated.person_id

),

final as (

    select
        untreated.snapshot_date,
        untreated.person_id,
        {{ feature_columns('features') }},
        untreated.label_window_end_at,
        labels.person_id is not null as converted,
        coalesce(labels.order_count, 0) as order_count_in_horizon,
        cast(coalesce(labels.revenue, 0) as decimal(18, 2)) as revenue_in_horizon
    from untreated
    inner join features
        on untreated.snapshot_date = features.snapshot_date
        and untreated.person_id = features.person_id
    left join labels
        on untreated.snapshot_date = labels.snapshot_date
        and untreated.person_id = labels.person_id

)

select * from final
