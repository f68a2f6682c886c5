"""dbt's ``adapter`` as SQL linting sees it: no relation exists yet (a first build)."""


def get_relation(database: object = None, schema: object = None, identifier: object = None) -> None:
    """``adapter.get_relation(...)``: none."""
    return None
