{% macro feature_columns(alias) %}
    {#- The feature columns of person_features_daily (its keys left out), qualified by alias, in table order:
        the training sets select them all, so a new feature is added here once. -#}
    {%- set columns = [
        'days_since_last_order', 'order_count', 'order_count_30d', 'monetary_value', 'monetary_value_30d',
        'event_count_1d', 'event_count_7d', 'event_count_30d', 'event_count_90d', 'active_days_30d',
        'product_view_count_30d', 'cart_abandoned_days_30d', 'days_since_cart_abandoned',
        'email_sent_count_30d', 'email_click_count_30d', 'email_click_rate_30d', 'top_category',
        'top_category_share', 'days_since_campaign_touch', 'has_email_consent', 'has_sms_consent',
        'has_push_consent', 'tenure_days', 'average_order_value', 'cart_abandon_rate_90d',
        'has_profiling_consent',
    ] -%}
    {%- for column in columns %}
        {{ alias }}.{{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
