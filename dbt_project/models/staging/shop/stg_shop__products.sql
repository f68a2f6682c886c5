with

source as (

    select * from {{ source('shop', 'products') }}

),

renamed as (

    select
        product_id,
        sku,
        category,
        name,
        price,
        updated_at,
        _changed_at as changed_at
    from source

)

select * from renamed
