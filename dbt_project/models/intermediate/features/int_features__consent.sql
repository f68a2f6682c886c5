-- Consent per person, channel and snapshot: the version live at the snapshot of the consents of contacts linked
-- to the person before it; across a person's contacts the latest choice wins, and a revocation wins a tie.

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

consents_history as (

    select * from {{ ref('stg_crm__consents_history') }}

),

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

final as (

    select
        snapshot_date,
        person_id,
        bool_and(status = 'granted') filter (where channel = 'email') as has_email_consent,
        bool_and(status = 'granted') filter (where channel = 'sms') as has_sms_consent,
        bool_and(status = 'granted') filter (where channel = 'push') as has_push_consent,
        bool_and(status = 'granted') filter (where channel = 'profiling') as has_profiling_consent
    from known_consents
    group by snapshot_date, person_id

)

select * from final
