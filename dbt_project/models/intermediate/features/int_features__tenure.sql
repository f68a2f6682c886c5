-- Tenure per person and snapshot: the earliest creation, known at the snapshot, of the person's CRM contacts and
-- shop accounts (each live at the snapshot and linked to the person before it).

with

snapshots as (

    select * from {{ ref('int_features__snapshots') }}

),

identity_person_map as (

    select * from {{ ref('identity_person_map') }}

),

contacts_history as (

    select * from {{ ref('stg_crm__contacts_history') }}

),

customers_history as (

    select * from {{ ref('stg_shop__customers_history') }}

),

known_accounts as (

    select
        snapshots.snapshot_date,
        contacts.person_id,
        contacts_history.created_at
    from snapshots
    inner join contacts_history
        on {{ valid_at('contacts_history', 'snapshots.snapshot_at') }}
        and contacts_history.created_at < snapshots.snapshot_at
    inner join identity_person_map as contacts
        on contacts.identifier_type = 'crm_contact_id'
        and contacts.identifier = cast(contacts_history.contact_id as {{ dbt.type_string() }})
        and contacts.linked_at < snapshots.snapshot_at
    where contacts_history.change_op <> 'd'

    union all

    select
        snapshots.snapshot_date,
        shop_customers.person_id,
        customers_history.created_at
    from snapshots
    inner join customers_history
        on {{ valid_at('customers_history', 'snapshots.snapshot_at') }}
        and customers_history.created_at < snapshots.snapshot_at
    inner join identity_person_map as shop_customers
        on shop_customers.identifier_type = 'shop_customer_id'
        and shop_customers.identifier = cast(customers_history.customer_id as {{ dbt.type_string() }})
        and shop_customers.linked_at < snapshots.snapshot_at
    where customers_history.change_op <> 'd'

),

final as (

    select
        snapshot_date,
        person_id,
        min(created_at) as customer_since_at
    from known_accounts
    group by snapshot_date, person_id

)

select * from final
