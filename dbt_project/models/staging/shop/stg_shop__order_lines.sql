with

source as (

    select * from {{ source('shop', 'order_lines') }}

),

renamed as (

    select
        line_id,
        order_id,
        product_id,
        quantity,
        unit_price,
        created_at,
        _changed_at as changed_at
    from source

)

select * from renamed
