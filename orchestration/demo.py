"""``python -m orchestration.demo``: the runs of ``make demo`` in one process. First the simulated company and
every asset that does not depend on the daily feature snapshots, then the snapshots of every date the data supports
(one run over the partition range), then the assets downstream of the snapshots but the models (group ``ml``).

Each run is what ``dg launch -m orchestration.definitions --assets ...`` executes: a run of the code location's
asset job on the Dagster instance of ``DAGSTER_HOME``, so the runs show in the Dagster UI. Launched one after the
other from here, they share one import of Dagster and one load of the code location (seconds per run)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration.snapshot_dates import supported_snapshot_dates

DEFINITIONS_MODULE = "orchestration.definitions"
# the selections `dg launch --assets` took: 'not key:"marts/person_features_daily"+', then the snapshots, then
# 'key:"marts/person_features_daily"+ and not key:"marts/person_features_daily"'
SNAPSHOTS = dg.AssetSelection.assets(dg.AssetKey(["marts", "person_features_daily"]))
BEFORE_SNAPSHOTS = dg.AssetSelection.all() - SNAPSHOTS.downstream()
MODELS = dg.AssetSelection.groups("ml")
"""Training, decisions and evaluation: ``make demo`` runs them after these runs, as commands (``ml.pipeline``,
``ml.score``, ``ml.evaluate``), so that a demo too small to train on still builds the lake."""
AFTER_SNAPSHOTS = SNAPSHOTS.downstream() - SNAPSHOTS - MODELS


def company_config(persons: int, days: int, seed: int) -> dict:
    """The run config of the simulated company asset."""
    return {"ops": {"simulated_company": {"config": {"persons": persons, "days": days, "seed": seed}}}}


def materialize(
    instance: dg.DagsterInstance,
    selection: dg.AssetSelection,
    run_config: Mapping | None = None,
    partition_range: tuple[str, str] | None = None,
) -> dg.JobExecutionResult:
    """Materialize the assets of ``selection`` in one run on ``instance``, in this process, over
    ``partition_range`` (first and last key, their backfill policy a single run) when given; raise ``SystemExit``
    when the run fails. As ``dg launch`` does: the code location's asset job, reconstructable from
    the module that defines it (loaded once per process)."""
    repository = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", os.getcwd())
    definitions = repository.get_definition()
    keys = selection.resolve(definitions.asset_graph)
    job = definitions.get_implicit_job_def_for_assets(keys)
    tags = {}
    if partition_range is not None:
        tags = {
            ASSET_PARTITION_RANGE_START_TAG: partition_range[0],
            ASSET_PARTITION_RANGE_END_TAG: partition_range[1],
        }
    result = dg.execute_job(
        repository.get_reconstructable_job(job.name),
        instance=instance,
        run_config=run_config,
        tags=tags,
        asset_selection=sorted(keys),
    )
    if not result.success:
        raise SystemExit(f"the run {result.run_id} of {selection} failed")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the demo company's size and seed, and run the three materializations of ``make demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    # each run starts in this directory, as in a process of its own: dagster-dbt's threads that fetch row counts
    # change the working directory concurrently and can leave the process in the dbt project's
    here = os.getcwd()
    instance = dg.DagsterInstance.get()
    with contextlib.chdir(here):
        materialize(instance, BEFORE_SNAPSHOTS, company_config(args.persons, args.days, args.seed))
    with contextlib.chdir(here):
        materialize(instance, SNAPSHOTS, partition_range=supported_snapshot_dates())
    with contextlib.chdir(here):
        materialize(instance, AFTER_SNAPSHOTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
