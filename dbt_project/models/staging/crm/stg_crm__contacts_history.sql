with

source as (

    select * from {{ source('crm', 'contacts_history') }}
    where _op <> 't'  -- truncate markers carry no row

),

renamed as (

    select
        contact_id,
        country,
        preferred_language,
        attributes,
        email_token,
        phone_token,
        first_name_token,
        last_name_token,
        birth_year,
        created_at,
        updated_at,
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
