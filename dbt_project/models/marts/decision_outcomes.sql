-- One row per logged campaign decision (a CRM activity, the no_action controls included) with the outcomes
-- attributed to it within the attribution window [decision_at, decision_at + attribution_days).
-- Last touch: an order, session or event of the person is attributed only to the person's latest decision at or
-- before it, so each decision's attribution ends at the person's next decision (or its window's end, if earlier)
-- and two overlapping decisions never count the same outcome. E-mail click-throughs name their activity
-- (email_id), so they count for that activity within its window.

{% set attribution_days = var('attribution_days', 7) %}

with

person_activities as (

    select * from {{ ref('int_marts__person_activities') }}

),

person_orders as (

    select * from {{ ref('int_marts__person_orders') }}

),

events as (

    select * from {{ ref('stg_clickstream__events') }}

),

person_events as (

    select * from {{ ref('int_marts__person_events') }}

),

person_sessions as (

    select * from {{ ref('person_sessions') }}

),

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

decisions as (

    select
        activity_id,
        person_id,
        contact_id,
        campaign_id,
        action,
        channel,
        propensity,
        sent_at as decision_at,
        {{ dbt.dateadd('day', attribution_days, 'sent_at') }} as window_end_at,
        -- the person's next decision (ties at the same instant: the higher activity id is the later one)
        lead(sent_at) over (partition by person_id order by sent_at, activity_id) as next_decision_at
    from person_activities

),

attribution_windows as (

    -- the half-open interval [decision_at, attributed_until) in which this decision is the person's last touch
    select
        *,
        case
            when next_decision_at is not null and next_decision_at < window_end_at then next_decision_at
            else window_end_at
        end as attributed_until
    from decisions

),

attributed_orders as (

    select
        attribution_windows.activity_id,
        count(*) as order_count,
        sum(person_orders.total_amount) as revenue,
        min(person_orders.created_at) as first_order_at
    from attribution_windows
    inner join person_orders
        on attribution_windows.person_id = person_orders.person_id
        and person_orders.created_at >= attribution_windows.decision_at
        and person_orders.created_at < attribution_windows.attributed_until
    group by attribution_windows.activity_id

),

email_clicks as (

    select
        attribution_windows.activity_id,
        count(*) as email_click_count
    from attribution_windows
    inner join events
        on events.email_id = cast(attribution_windows.activity_id as {{ dbt.type_string() }})
        and events.event_at >= attribution_windows.decision_at
        and events.event_at < attribution_windows.window_end_at
    where events.event_name = 'Email Link Clicked'
    group by attribution_windows.activity_id

),

attributed_events as (

    select
        attribution_windows.activity_id,
        count(*) as event_count
    from attribution_windows
    inner join person_events
        on attribution_windows.person_id = person_events.person_id
        and person_events.event_at >= attribution_windows.decision_at
        and person_events.event_at < attribution_windows.attributed_until
    group by attribution_windows.activity_id

),

attributed_sessions as (

    -- a session counts for the decision its first event is attributed to
    select
        attribution_windows.activity_id,
        count(*) as session_count
    from attribution_windows
    inner join person_sessions
        on attribution_windows.person_id = person_sessions.person_id
        and person_sessions.started_at >= attribution_windows.decision_at
        and person_sessions.started_at < attribution_windows.attributed_until
    group by attribution_windows.activity_id

),

final as (

    select
        attribution_windows.activity_id,
        attribution_windows.person_id,
        attribution_windows.contact_id,
        attribution_windows.campaign_id,
        attribution_windows.action,
        attribution_windows.channel,
        attribution_windows.propensity,
        attribution_windows.decision_at,
        attribution_windows.window_end_at,
        attribution_windows.attributed_until,
        attribution_windows.window_end_at <= data_window.data_until as window_complete,
        coalesce(attributed_orders.order_count, 0) as order_count,
        cast(coalesce(attributed_orders.revenue, 0) as decimal(18, 2)) as revenue,
        attributed_orders.first_order_at,
        coalesce(email_clicks.email_click_count, 0) as email_click_count,
        coalesce(attributed_sessions.session_count, 0) as session_count,
        coalesce(attributed_events.event_count, 0) as event_count
    from attribution_windows
    cross join data_window
    left join attributed_orders on attribution_windows.activity_id = attributed_orders.activity_id
    left join email_clicks on attribution_windows.activity_id = email_clicks.activity_id
    left join attributed_sessions on attribution_windows.activity_id = attributed_sessions.activity_id
    left join attributed_events on attribution_windows.activity_id = attributed_events.activity_id

)

select * from final
