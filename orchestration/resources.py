"""Resources shared by the assets: where the lake is."""

from dataclasses import replace

import dagster as dg

from lake.settings import Settings, get_settings

WAREHOUSE_POOL = "warehouse"
"""Concurrency pool of every step that writes the DuckDB warehouse file: one writer at a time, across runs."""


class LakeResource(dg.ConfigurableResource):
    """The project settings (``lake.settings``), with the lake root overridable per run or per test."""

    lake_root: str | None = None

    def settings(self) -> Settings:
        """The settings the assets of this run read and write with."""
        settings = get_settings()
        return replace(settings, lake_root=self.lake_root) if self.lake_root else settings
