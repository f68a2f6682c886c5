with

source as (

    select * from {{ source('clickstream', 'events') }}

),

renamed as (

    select
        message_id,
        type as message_type,
        event as event_name,
        name as screen_or_page_name,
        anonymous_id,
        user_id,
        previous_id,
        group_id,
        source as sdk_source,
        channel,
        event_at,
        event_date,
        original_timestamp,
        timestamp as explicit_timestamp,
        sent_at,
        received_at,
        clock_skew_seconds,
        page_path,
        page_url,
        referrer,
        user_agent,
        locale,
        library_name,
        library_version,
        device_type,
        device_model,
        device_manufacturer,
        os_name,
        os_version,
        app_version,
        campaign_source,
        campaign_medium,
        campaign_name,
        product_id,
        category,
        price,
        quantity,
        order_id,
        order_value,
        currency,
        campaign_id,
        email_id,
        properties,
        traits,
        traits_email_token,
        traits_phone_token,
        context_traits_email_token,
        context_traits_phone_token,
        context_ip_prefix
    from source

)

select * from renamed
