with

source as (

    select * from {{ source('crm', 'activities_history') }}
    where _op <> 't'  -- truncate markers carry no row

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
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
