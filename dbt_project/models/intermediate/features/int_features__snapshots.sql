-- The snapshot dates person_features_daily builds in this run, each with the instant it is taken at (T 00:00 UTC):
-- the half-open window [snapshot_from, snapshot_until) when given as vars (a Dagster daily partition), otherwise
-- the dates the data supports after the latest one present (every date on a first build or a full refresh).
-- Every feature group joins through it, so none computes more dates than the run builds.

with

data_window as (

    select * from {{ ref('int_marts__data_window') }}

),

snapshot_days as (

    select {{ date_series('first_snapshot_date', 'last_snapshot_date') }} as snapshot_date
    from data_window

),

final as (

    select
        snapshot_days.snapshot_date,
        {{ utc_midnight('snapshot_days.snapshot_date') }} as snapshot_at
    from snapshot_days
    {% if var('snapshot_from', none) is not none %}
    where snapshot_days.snapshot_date >= cast('{{ var("snapshot_from") }}' as date)
        and snapshot_days.snapshot_date < cast('{{ var("snapshot_until") }}' as date)
    {% elif features_built_before() %}
    where snapshot_days.snapshot_date > (select max(built.snapshot_date) from {{ features_relation() }} as built)
    {% endif %}

)

select * from final
