"""Connected components of the identity graph: one component (a person to be) per identifier.

People-level identifiers, e-mail and phone tokens are joined by their edges into components with
``scipy.sparse.csgraph.connected_components`` (linear in the edges; a recursive CTE needs one pass per hop).
Devices (anonymous ids) are then attached, never used as bridges: a device whose edges reach one component
joins it, a device that reaches several (a family tablet) stays a component of its own. Values cut by the
fan-out guard keep only themselves.
"""

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

DEVICE_TYPE = "anonymous_id"


def components(con, identifiers: str, edges: str, cuts: str) -> pa.Table:
    """Per identifier (of ``identifiers`` and ``edges``): its component key (the smallest ``type:identifier`` of the
    component) and, for a device, how many components of people its edges reach."""
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
            (row_number() over (order by identifier_type, identifier) - 1)::bigint as node,
            identifier_type,
            identifier,
            identifier_type = '{DEVICE_TYPE}' as is_device,
            exists (
                select 1 from {cuts} as cuts
                where cuts.identifier_type = keys.identifier_type and cuts.identifier = keys.identifier
            ) as is_cut
        from keys
    """)
    pairs = con.sql(f"""
        select l.node as l, r.node as r, l.is_device or r.is_device as via_device
        from {edges} as e
        inner join identity_nodes as l
            on e.left_type = l.identifier_type and e.left_identifier = l.identifier
        inner join identity_nodes as r
            on e.right_type = r.identifier_type and e.right_identifier = r.identifier
        where not l.is_cut and not r.is_cut
    """).fetchnumpy()
    n = con.sql("select count(*) from identity_nodes").fetchall()[0][0]
    left, right, via_device = pairs["l"], pairs["r"], pairs["via_device"]
    label = people_components(n, left[~via_device], right[~via_device])
    label, reached = attach_devices(
        label,
        left[via_device],
        right[via_device],
        con.sql("select is_device from identity_nodes order by node").fetchnumpy()["is_device"],
    )
    con.register("identity_labels", pa.table({"node": np.arange(n), "label": label, "reached": reached}))
    result = con.sql("""
        with labelled as (
            select nodes.identifier_type, nodes.identifier, labels.label, labels.reached, nodes.is_device
            from identity_nodes as nodes
            inner join identity_labels as labels using (node)
        )
        select
            identifier_type,
            identifier,
            min(identifier_type || ':' || identifier) over (partition by label) as component_key,
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


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("int_identity__identifiers").create_view("identity_identifiers")
    dbt.ref("int_identity__edges").create_view("identity_edges")
    dbt.ref("int_identity__fanout_cuts").create_view("identity_cuts")
    return components(session, "identity_identifiers", "identity_edges", "identity_cuts")
