-- CRM activities, the logged campaign decisions (campaign touches and no_action controls), attributed to persons
-- through identity_person_map by the contact they went to; the one definition every mart that reads decisions
-- joins through.

with

activities as (

    select * from {{ ref('stg_crm__activities') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

final as (

    select
        contacts.person_id,
        activities.activity_id,
        activities.contact_id,
        activities.campaign_id,
        activities.activity_type,
        activities.action,
        activities.channel,
        activities.propensity,
        activities.offer_value,
        activities.sent_at
    from activities
    inner join identity_person_map as contacts
        on contacts.identifier_type = 'crm_contact_id'
        and contacts.identifier = cast(activities.contact_id as {{ dbt.type_string() }})

)

select * from final
