"""Row order by several columns at once (polars has no ``<`` between structs)."""

from __future__ import annotations

import polars as pl


def lexicographic_less(left: list[str], right: list[str]) -> pl.Expr:
    """True where the columns ``left`` come strictly before the columns ``right``, compared in turn."""
    (first_left, *rest_left), (first_right, *rest_right) = left, right
    less = pl.col(first_left) < pl.col(first_right)
    if not rest_left:
        return less
    return less | ((pl.col(first_left) == pl.col(first_right)) & lexicographic_less(rest_left, rest_right))
