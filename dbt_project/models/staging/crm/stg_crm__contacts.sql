with

source as (

    select * from {{ source('crm', 'contacts') }}

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
        _changed_at as changed_at
    from source

)

select * from renamed
