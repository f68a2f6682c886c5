"""The Dagster entry point (``dagster dev`` through ``workspace.yaml``)."""

import dagster as dg

from lake.settings import disable_telemetry
from orchestration.simulation import simulated_company

disable_telemetry()

defs = dg.Definitions(assets=[simulated_company])
