-- How far the loaded data reaches, and the snapshot dates it supports.
-- data_until is the latest instant every steady feed has reached (the earliest of their latest timestamps;
-- CRM activities are left out: campaigns are sparse, so their latest timestamp says little);
-- a snapshot dated T is taken at T 00:00 UTC, from the day after the CDC initial snapshot
-- to the day data_until falls in.

with

events as (

    select * from {{ ref('stg_clickstream__events') }}

),

contacts_history as (

    select * from {{ ref('stg_crm__contacts_history') }}

),

orders_history as (

    select * from {{ ref('stg_shop__orders_history') }}

),

feed_bounds as (

    select max(received_at) as latest_at, null as earliest_at from events
    union all
    select max(valid_from), min(valid_from) from contacts_history
    union all
    select max(valid_from), min(valid_from) from orders_history

),

final as (

    select
        min(latest_at) as data_until,
        cast({{ dbt.dateadd('day', 1, utc_date('min(earliest_at)')) }} as date) as first_snapshot_date,
        {{ utc_date('min(latest_at)') }} as last_snapshot_date
    from feed_bounds

)

select * from final
