with

source as (

    select * from {{ source('shop', 'orders') }}

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
        _changed_at as changed_at
    from source

)

select * from renamed
