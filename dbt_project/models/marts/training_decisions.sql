-- One row per logged campaign decision (a CRM activity: action, channel, logged propensity) with the person's
-- features as of the decision day (taken at 00:00 UTC that day, before any decision of the day) and labels
-- from strictly after the decision: an order within the label horizon, and its revenue. Only decisions whose
-- label window has ended before the latest loaded data (data_until) are kept.

{% set horizon_days = var('label_horizon_days', 7) %}

with

person_activities as (

    select * from {{ ref('int_marts__person_activities') }}

),

person_orders as (

    select * from {{ ref('int_marts__person_orders') }}

),

features as (

    select * from {{ ref('person_features_daily') }}

),

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

decisions as (

    select
        person_activities.activity_id,
        person_activities.person_id,
        person_activities.contact_id,
        person_activities.campaign_id,
        person_activities.activity_type,
        person_activities.action,
        person_activities.channel,
        person_activities.propensity,
        person_activities.offer_value,
        person_activities.sent_at as decision_at,
        {{ utc_date('person_activities.sent_at') }} as decision_date,
        {{ dbt.dateadd('day', horizon_days, 'person_activities.sent_at') }} as label_window_end_at
    from person_activities
    cross join data_window
    where {{ dbt.dateadd('day', horizon_days, 'person_activities.sent_at') }} <= data_window.data_until

),

labels as (

    -- the half-open window (decision_at, decision_at + horizon): strictly after the decision
    select
        decisions.activity_id,
        count(*) as order_count,
        sum(person_orders.total_amount) as revenue,
        min(person_orders.created_at) as first_order_at
    from decisions
    inner join person_orders
        on decisions.person_id = person_orders.person_id
        and person_orders.created_at > decisions.decision_at
        and person_orders.created_at < decisions.label_window_end_at
    group by decisions.activity_id

),

final as (

    select
        decisions.activity_id,
        decisions.person_id,
        decisions.contact_id,
        decisions.campaign_id,
        decisions.activity_type,
        decisions.action,
        decisions.channel,
        decisions.propensity,
        decisions.offer_value,
        decisions.decision_at,
        decisions.decision_date,
        features.snapshot_date as feature_snapshot_date,
        {{ feature_columns('features') }},
        decisions.label_window_end_at,
        labels.activity_id is not null as converted,
        coalesce(labels.order_count, 0) as order_count_in_horizon,
        cast(coalesce(labels.revenue, 0) as decimal(18, 2)) as revenue_in_horizon,
        labels.first_order_at
    from decisions
    inner join features
        on decisions.person_id = features.person_id
        and decisions.decision_date = features.snapshot_date
    left join labels on decisions.activity_id = labels.activity_id

)

select * from final
