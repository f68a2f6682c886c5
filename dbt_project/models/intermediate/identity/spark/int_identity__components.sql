-- The connected components of the identity graph on the Spark target, as iterative SQL: the same rows as the
-- DuckDB target's Python model (int_identity__components.py, whose docstring states the rules), which dbt-spark
-- cannot run (its Python models need Databricks). People-level identifiers and tokens are joined by their
-- edges, minus the fan-out cuts: every node takes the smallest key of its neighbours until no label changes
-- (label propagation). linked_at is the bottleneck time from the person's anchor (the first-seen people-level
-- identifier): the anchor starts at its first sighting, every other node at the smallest, over its neighbours,
-- of the later of the neighbour's time and the edge's first_known_at, until no time changes; that is the latest
-- edge on the path of a minimum spanning tree, which the Python model follows. Devices are then attached to the
-- one component their edges reach, never bridging two. Each iteration is a Delta table beside the model's.
-- The iterations' SQL is assembled in Jinja strings, which the linter's layout rules cannot place:
-- noqa: disable=LT02

{%- set edges_relation = ref('int_identity__edges') -%}
{%- set identifiers_relation = ref('int_identity__identifiers') -%}
{%- set cuts_relation = ref('int_identity__fanout_cuts') %}

{%- set nodes_sql -%}
    with keys as (
        select identifier_type, identifier from {{ identifiers_relation }}
        union
        select left_type, left_identifier from {{ edges_relation }}
        union
        select right_type, right_identifier from {{ edges_relation }}
    )
    select
        keys.identifier_type,
        keys.identifier,
        keys.identifier_type || ':' || keys.identifier as node_key,
        seen.first_seen,
        keys.identifier_type = 'anonymous_id' as is_device,
        cuts.identifier is not null as is_cut
    from keys
    left join {{ identifiers_relation }} as seen
        on keys.identifier_type = seen.identifier_type and keys.identifier = seen.identifier
    left join (select distinct identifier_type, identifier from {{ cuts_relation }}) as cuts
        on keys.identifier_type = cuts.identifier_type and keys.identifier = cuts.identifier
{%- endset -%}

{#- each pair of distinct nodes once (smallest key first), neither cut, with when it was first known -#}
{%- set pairs_sql -%}
    select
        least(l.node_key, r.node_key) as low_key,
        greatest(l.node_key, r.node_key) as high_key,
        l.is_device or r.is_device as via_device,
        min(e.first_known_at) as known_at
    from {{ edges_relation }} as e
    inner join ({{ nodes_sql }}) as l
        on e.left_type = l.identifier_type and e.left_identifier = l.identifier
    inner join ({{ nodes_sql }}) as r
        on e.right_type = r.identifier_type and e.right_identifier = r.identifier
    where not l.is_cut and not r.is_cut and l.node_key <> r.node_key
    group by least(l.node_key, r.node_key), greatest(l.node_key, r.node_key), l.is_device or r.is_device
{%- endset -%}

{#- the people edges in both directions -#}
{%- set people_sql -%}
    select low_key as node_key, high_key as neighbour_key, known_at from ({{ pairs_sql }}) as pairs
    where not via_device
    union all
    select high_key, low_key, known_at from ({{ pairs_sql }}) as pairs
    where not via_device
{%- endset -%}

{%- if execute -%}
    {%- set labels = iterate_until_unchanged(
        'labels',
        'select node_key, node_key as label from (' ~ nodes_sql ~ ') as nodes',
        'select previous.node_key, least(previous.label, coalesce(min(neighbours.label), previous.label)) as label
        from {previous} as previous
        left join (' ~ people_sql ~ ') as people on previous.node_key = people.node_key
        left join {previous} as neighbours on people.neighbour_key = neighbours.node_key
        group by previous.node_key, previous.label',
        'node_key', 'label'
    ) -%}
    {#- the anchor of each people component: its first-seen people-level node (ties: the smallest key) -#}
    {%- set anchored_sql -%}
        select
            nodes.node_key,
            labels.label,
            nodes.first_seen,
            not nodes.is_device and row_number() over (
                partition by labels.label order by nodes.is_device, nodes.first_seen, nodes.node_key
            ) = 1 as is_anchor
        from ({{ nodes_sql }}) as nodes
        inner join {{ labels }} as labels on nodes.node_key = labels.node_key
    {%- endset -%}
    {%- set linked = iterate_until_unchanged(
        'linked',
        'select node_key, case when is_anchor then first_seen end as linked_at from (' ~ anchored_sql ~ ') as a',
        'select previous.node_key,
            least(
                previous.linked_at,
                min(case when neighbours.linked_at is not null then greatest(neighbours.linked_at, people.known_at) end)
            ) as linked_at
        from {previous} as previous
        left join (' ~ people_sql ~ ') as people on previous.node_key = people.node_key
        left join {previous} as neighbours on people.neighbour_key = neighbours.node_key
        group by previous.node_key, previous.linked_at',
        'node_key', 'linked_at'
    ) -%}
{%- else -%}
    {%- set labels = this -%}
    {%- set linked = this -%}
{%- endif %}
-- noqa: enable=LT02

with

nodes as (

    {{ nodes_sql }}

),

people as (

    select
        nodes.node_key,
        nodes.identifier_type,
        nodes.identifier,
        nodes.is_device,
        labels.label,
        coalesce(linked.linked_at, nodes.first_seen) as linked_at
    from nodes
    inner join {{ labels }} as labels on nodes.node_key = labels.node_key
    inner join {{ linked }} as linked on nodes.node_key = linked.node_key

),

-- every edge of a device: the device (the smaller key when both ends are devices) and the node it leads to
device_edges as (

    select
        case when low.is_device then pairs.low_key else pairs.high_key end as device_key,
        case when low.is_device then pairs.high_key else pairs.low_key end as other_key,
        pairs.known_at
    from ({{ pairs_sql }}) as pairs
    inner join people as low on pairs.low_key = low.node_key
    where pairs.via_device

),

reached as (

    select
        device_edges.device_key,
        count(distinct other.label) as reached_components,
        min(other.label) as label
    from device_edges
    inner join people as other on device_edges.other_key = other.node_key
    group by device_edges.device_key

),

-- a device attached to one person: linked once it had an edge and every edge it had led to a node linked by then
attached as (

    select
        device_edges.device_key,
        greatest(
            min(device_edges.known_at),
            coalesce(
                max(case when other.linked_at > device_edges.known_at then other.linked_at end),
                min(device_edges.known_at)
            )
        ) as linked_at
    from device_edges
    inner join reached on device_edges.device_key = reached.device_key
    inner join people as other on device_edges.other_key = other.node_key
    where reached.reached_components = 1
    group by device_edges.device_key

),

labelled as (

    select
        people.identifier_type,
        people.identifier,
        people.node_key,
        case when reached.reached_components = 1 then reached.label else people.label end as label,
        coalesce(attached.linked_at, people.linked_at) as linked_at,
        case when people.is_device then coalesce(reached.reached_components, 0) end as reached_components
    from people
    left join reached on people.node_key = reached.device_key
    left join attached on people.node_key = attached.device_key

),

final as (

    select
        identifier_type,
        identifier,
        min(node_key) over (partition by label) as component_key,
        linked_at,
        reached_components
    from labelled

)

select * from final
