with

source as (

    select * from {{ source('shop', 'customers_history') }}
    where _op <> 't'  -- truncate markers carry no row

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
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
