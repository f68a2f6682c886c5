-- Category affinity per person and snapshot: the most viewed or added category over the 30 days before it.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

person_events as (

    select * from {{ ref('int_marts__person_events') }}

),

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
            partition by snapshot_date, person_id order by category_event_count desc, category asc
        ) as category_rank
    from category_events

),

final as (

    select
        snapshot_date,
        person_id,
        category as top_category,
        category_share as top_category_share
    from ranked_categories
    where category_rank = 1

)

select * from final
