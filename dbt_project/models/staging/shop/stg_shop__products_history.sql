with

source as (

    select * from {{ source('shop', 'products_history') }}
    where _op <> 't'  -- truncate markers carry no row

),

renamed as (

    select
        product_id,
        sku,
        category,
        name,
        price,
        updated_at,
        _op as change_op,
        _valid_from as valid_from,
        _valid_to as valid_to
    from source

)

select * from renamed
