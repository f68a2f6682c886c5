-- The person map of the previous run (empty on the first run): what keeps person ids stable.
-- It reads identity_person_map by name, not by ref(), because it is the map's own earlier state.
{%- set previous = adapter.get_relation(database=this.database, schema=this.schema, identifier='identity_person_map') %}

{% if previous is not none %}

select identifier_type, identifier, person_id, first_seen
from {{ previous }}

{% else %}

select
    cast(null as {{ dbt.type_string() }}) as identifier_type,
    cast(null as {{ dbt.type_string() }}) as identifier,
    cast(null as {{ dbt.type_string() }}) as person_id,
    cast(null as {{ type_timestamp_tz() }}) as first_seen
where false

{% endif %}
