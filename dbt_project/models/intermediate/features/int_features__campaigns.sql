-- Campaign touches per person and snapshot: the CRM activities live at the snapshot, sent before it to a
-- contact linked to the person before it, and the e-mails among them.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

activities_history as (

    select * from {{ ref('stg_crm__activities_history') }}

),

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

final as (

    select
        snapshot_date,
        person_id,
        max(sent_at) as last_campaign_touch_at,
        count(*) filter (
            where channel = 'email' and sent_at >= {{ dbt.dateadd('day', -30, 'snapshot_at') }}
        ) as email_sent_count_30d
    from known_activities
    group by snapshot_date, person_id

)

select * from final
