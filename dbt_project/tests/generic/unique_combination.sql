{#- No two rows share the same values of all the given columns (a key of several columns). -#}
{% test unique_combination(model, columns) %}

select {{ columns | join(', ') }}, count(*) as rows_with_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
