with

source as (

    select * from {{ source('crm', 'activities') }}

),

renamed as (

    select
        activity_id,
        contact_id,
        campaign_id,
        activity_type,
        action,
        channel,
        propensity,
        offer_value,
        sent_at,
        decision_id,
        _changed_at as changed_at
    from source

)

select * from renamed
