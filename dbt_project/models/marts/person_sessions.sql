-- Sessions per person across all their devices: a new session starts after session_gap_minutes (a project var,
-- 30) without an event.

with

person_events as (

    select * from {{ ref('int_marts__person_events') }}

),

gaps as (

    select
        *,
        lag(event_at) over (partition by person_id order by event_at, message_id) as previous_event_at
    from person_events

),

numbered as (

    select
        *,
        sum(
            case
                when previous_event_at is null
                    or event_at >= {{ dbt.dateadd('minute', var('session_gap_minutes'), 'previous_event_at') }} then 1
                else 0
            end
        ) over (
            partition by person_id order by event_at, message_id rows unbounded preceding
        ) as session_number
    from gaps

),

final as (

    select
        {{ dbt.hash("person_id || ':' || min_by(message_id, event_at)") }} as session_id,
        person_id,
        session_number,
        min(event_at) as started_at,
        max(event_at) as ended_at,
        {{ dbt.datediff('min(event_at)', 'max(event_at)', 'second') }} as duration_seconds,
        count(*) as event_count,
        count(*) filter (where message_type in ('page', 'screen')) as page_view_count,
        count(*) filter (where event_name = 'Product Viewed') as product_view_count,
        count(*) filter (where event_name = 'Product Added') as product_added_count,
        count(*) filter (where event_name = 'Order Completed') as order_completed_count,
        count(*) filter (where event_name = 'Email Link Clicked') as email_click_count,
        count(distinct anonymous_id) as device_count,
        {{ listagg_distinct('sdk_source', "','") }} as sdk_sources
    from numbered
    group by person_id, session_number

)

select * from final
