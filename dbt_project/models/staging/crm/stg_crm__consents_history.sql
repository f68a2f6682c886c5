with

source as (

    select * from {{ source('crm', 'consents_history') }}
    where _op <> 't'  -- truncate markers carry no row

),

renamed as (

    select
        consent_id,
        contact_id,
        channel,
        status,
        source,
        updated_at,
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
