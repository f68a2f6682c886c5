with

source as (

    select * from {{ source('shop', 'customers') }}

),

renamed as (

    select
        customer_id,
        country,
        email_token,
        phone_token,
        first_name_token,
        last_name_token,
        created_at,
        updated_at,
        _changed_at as changed_at
    from source

)

select * from renamed
