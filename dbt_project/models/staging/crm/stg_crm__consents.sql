with

source as (

    select * from {{ source('crm', 'consents') }}

),

renamed as (

    select
        consent_id,
        contact_id,
        channel,
        status,
        source,
        updated_at,
        _changed_at as changed_at
    from source

)

select * from renamed
