with

source as (

    select * from {{ source('shop', 'order_lines_history') }}
    where _op <> 't'  -- truncate markers carry no row

),

renamed as (

    select
        line_id,
        order_id,
        product_id,
        quantity,
        unit_price,
        created_at,
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
