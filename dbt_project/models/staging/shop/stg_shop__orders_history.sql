with

source as (

    select * from {{ source('shop', 'orders_history') }}
    where _op <> 't'  -- truncate markers carry no row

),

renamed as (

    select
        order_id,
        customer_id,
        status,
        currency,
        subtotal_amount,
        discount_amount,
        shipping_amount,
        total_amount,
        sales_channel,
        ordered_on,
        created_at,
        updated_at,
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
