{#- Every non-null value of the column lies between min_value and max_value (inclusive unless told otherwise). -#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, min_exclusive=false, max_exclusive=false) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
    and (
        false
        {%- if min_value is not none %}
        or {{ column_name }} {{ '<=' if min_exclusive else '<' }} {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        or {{ column_name }} {{ '>=' if max_exclusive else '>' }} {{ max_value }}
        {%- endif %}
    )

{% endtest %}
