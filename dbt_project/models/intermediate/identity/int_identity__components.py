"""Connected components of the identity graph: one component (a person to be) per identifier.

People-level identifiers, e-mail and phone tokens are joined by their edges into components with
``scipy.sparse.csgraph.connected_components`` (linear in the edges; a recursive CTE needs one pass per hop).
Devices (anonymous ids) are then attached, never used as bridges: a device whose edges reach one component
joins it, a device that reaches several (a family tablet) stays a component of its own. Values cut by the
fan-out guard keep only themselves.

Every identifier also gets ``linked_at``: from when on it belongs to its person, so that a feature dated T
counts only the identifiers that were linked before T, and re-running a date gives the same row. A person
grows from its anchor, the people-level identifier seen first (ties: the smallest ``type:identifier``).
Another identifier is linked once evidence known by then connects it to the anchor: the earliest such time is
the latest edge on their path in a minimum spanning tree weighted by when each edge was first known. A device
is linked once it has an edge to the person and all of its edges lead to identifiers already linked (before,
it reached two people).
"""

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

DEVICE_TYPE = "anonymous_id"


def components(con, identifiers: str, edges: str, cuts: str) -> pa.Table:
    """Per identifier (of ``identifiers`` and ``edges``): its component key (the smallest ``type:identifier``
    of the component), when it was linked to its person, and, for a device, how many components of people its
    edges reach."""
    con.execute(f"""
        create or replace temp table identity_nodes as
        with keys as (
            select identifier_type, identifier from {identifiers}
            union
            select left_type, left_identifier from {edges}
            union
            select right_type, right_identifier from {edges}
        )
        select
            (row_number() over (order by keys.identifier_type, keys.identifier) - 1)::bigint as node,
            keys.identifier_type,
            keys.identifier,
            epoch_us(seen.first_seen) as first_seen_us,
            keys.identifier_type = '{DEVICE_TYPE}' as is_device,
            exists (
                select 1 from {cuts} as cuts
                where cuts.identifier_type = keys.identifier_type and cuts.identifier = keys.identifier
            ) as is_cut
        from keys
        left join {identifiers} as seen
            on seen.identifier_type = keys.identifier_type and seen.identifier = keys.identifier
    """)
    pairs = con.sql(f"""
        select
            least(l.node, r.node) as l,
            greatest(l.node, r.node) as r,
            l.is_device or r.is_device as via_device,
            epoch_us(min(e.first_known_at)) as known_us
        from {edges} as e
        inner join identity_nodes as l
            on e.left_type = l.identifier_type and e.left_identifier = l.identifier
        inner join identity_nodes as r
            on e.right_type = r.identifier_type and e.right_identifier = r.identifier
        where not l.is_cut and not r.is_cut and l.node <> r.node
        group by all
    """).fetchnumpy()
    nodes = con.sql("select is_device, first_seen_us from identity_nodes order by node").fetchnumpy()
    is_device, first_seen = nodes["is_device"], nodes["first_seen_us"]
    if np.ma.is_masked(first_seen):
        raise ValueError(f"{identifiers} lacks the first sighting of identifiers that {edges} names")
    first_seen = np.asarray(first_seen, dtype=np.int64)
    n = len(is_device)
    if np.ma.is_masked(pairs["known_us"]):
        raise ValueError(f"{edges} has evidence without first_known_at")
    left, right, via_device = pairs["l"], pairs["r"], pairs["via_device"]
    known = np.asarray(pairs["known_us"], dtype=np.int64)
    people = ~via_device
    label = people_components(n, left[people], right[people])
    linked = people_link_times(label, left[people], right[people], known[people], is_device, first_seen)
    label, reached = attach_devices(label, left[via_device], right[via_device], is_device)
    linked = device_link_times(
        linked, left[via_device], right[via_device], known[via_device], is_device, reached
    )
    con.register(
        "identity_labels",
        pa.table(
            {
                "node": np.arange(n),
                "label": label,
                "reached": reached,
                "linked_at": pa.array(linked, pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    result = con.sql("""
        with labelled as (
            select nodes.identifier_type, nodes.identifier, labels.label,
                labels.reached, labels.linked_at, nodes.is_device
            from identity_nodes as nodes
            inner join identity_labels as labels using (node)
        )
        select
            identifier_type,
            identifier,
            min(identifier_type || ':' || identifier) over (partition by label) as component_key,
            linked_at,
            case when is_device then reached end as reached_components
        from labelled
    """).to_arrow_table()
    con.unregister("identity_labels")
    return result


def people_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The component label of each of ``n`` nodes, given the edges ``left[i] - right[i]``."""
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def attach_devices(
    label: np.ndarray, left: np.ndarray, right: np.ndarray, is_device: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels with every device that reaches exactly one component moved into it, and per node the number
    of components its device edges reach (0 for nodes that are no devices)."""
    device = np.where(is_device[left], left, right)
    other = label[np.where(is_device[left], right, left)]
    pairs = np.unique(np.stack([device, other]), axis=1)
    reached = np.bincount(pairs[0], minlength=len(label))
    single = pairs[:, reached[pairs[0]] == 1]
    label = label.copy()
    label[single[0]] = single[1]
    return label, reached


def people_link_times(
    label: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    known: np.ndarray,
    is_device: np.ndarray,
    first_seen: np.ndarray,
) -> np.ndarray:
    """Per node, when it was linked to the anchor of its people component (its first-seen people-level node),
    given the people edges ``left[i] - right[i]`` (each pair once) first known at ``known[i]``: the latest
    edge on the path of a minimum spanning tree. Anchors, and nodes that are no part of a people tree
    (devices, which ``device_link_times`` handles), count from their first sighting."""
    n = len(label)
    order = np.lexsort((np.arange(n), first_seen, is_device, label))  # per label, the anchor comes first
    first_of_label = np.ones(n, dtype=bool)
    first_of_label[1:] = label[order][1:] != label[order][:-1]
    is_anchor = np.zeros(n, dtype=bool)
    is_anchor[order[first_of_label]] = True
    is_anchor &= ~is_device
    # the spanning forest of the people edges, then one tree: a root above every anchor
    # explicit zeros would be no edges: every weight at least 1
    offset = (known.min() if len(known) else 0) - 1
    forest = minimum_spanning_tree(coo_matrix((known - offset, (left, right)), shape=(n, n)).tocsr()).tocoo()
    anchors = np.flatnonzero(is_anchor)
    root = n
    tree = coo_matrix(
        (
            np.ones(len(forest.row) + len(anchors), dtype=np.int8),
            (np.r_[forest.row, np.full(len(anchors), root)], np.r_[forest.col, anchors]),
        ),
        shape=(n + 1, n + 1),
    )
    reached, parent = breadth_first_order(tree, root, directed=False, return_predecessors=True)
    # the weight of the edge from each node up to its parent: tree edges in the forest, first sighting for
    # anchors
    edge_time = np.full(n + 1, np.iinfo(np.int64).min)
    weights = forest.data.astype(np.int64) + offset
    child_is_col = parent[forest.col] == forest.row
    edge_time[np.where(child_is_col, forest.col, forest.row)] = weights
    edge_time[anchors] = first_seen[anchors]
    # the latest edge on the way up to the root, by pointer jumping
    up = np.where(parent < 0, root, parent)
    up[root] = root
    latest = edge_time.copy()
    while (up != root).any():
        latest = np.maximum(latest, latest[up])
        up = up[up]
    linked = first_seen.copy()
    tree_nodes = reached[reached != root]
    linked[tree_nodes] = latest[tree_nodes]
    return linked


def device_link_times(
    linked: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    known: np.ndarray,
    is_device: np.ndarray,
    reached: np.ndarray,
) -> np.ndarray:
    """``linked`` with the link time of every device: for a device attached to one person, the first time from
    which it had an edge and every edge it had led to a node already linked; for any other, its first sighting
    (it is a person of its own)."""
    device = np.where(is_device[left], left, right)
    other = np.where(is_device[left], right, left)
    attached = reached[device] == 1
    device, other, known = device[attached], other[attached], known[attached]
    linked = linked.copy()
    first_edge = np.full(len(linked), np.iinfo(np.int64).max)
    np.minimum.at(first_edge, device, known)
    # an edge known before the node it leads to was linked: the device reached two people until then
    waits = np.full(len(linked), np.iinfo(np.int64).min)
    early = linked[other] > known
    np.maximum.at(waits, device[early], linked[other][early])
    devices = np.unique(device)
    linked[devices] = np.maximum(first_edge[devices], waits[devices])
    return linked


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("int_identity__identifiers").create_view("identity_identifiers")
    dbt.ref("int_identity__edges").create_view("identity_edges")
    dbt.ref("int_identity__fanout_cuts").create_view("identity_cuts")
    return components(session, "identity_identifiers", "identity_edges", "identity_cuts")
