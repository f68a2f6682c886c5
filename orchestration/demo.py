"""``python -m orchestration.demo``: the runs of ``make demo`` in one process. First the simulated company and
every asset that does not depend on the daily feature snapshots, then the snapshots of every date the data
supports (one run over the partition range), then the assets downstream of the snapshots but the models (group
``ml``), then the models for the latest snapshot date: train, register and gate a candidate, decide the
next-best actions of that date, evaluate them against the simulator's truth; then the syncs of those actions
to the CRM database (``CRM_DATABASE_URL``, else an embedded PostgreSQL server, see ``activation.crm_server``)
and the outbox, twice: the second run finds nothing changed and sends nothing. Then what was built: the lake,
the gate's decision, the decision summary, what the syncs sent and the CRM holds, and where to look.

Each run is what ``dg launch -m orchestration.definitions --assets ...`` executes: a run of the code
location's asset job on the Dagster instance of ``DAGSTER_HOME``, so the runs show in the Dagster UI. Launched
one after the other from here, they share one import of Dagster and one load of the code location (seconds per
run)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from orchestration.snapshot_dates import supported_snapshot_dates

DEFINITIONS_MODULE = "orchestration.definitions"
# the selections `dg launch --assets` took: 'not key:"marts/person_features_daily"+', then the snapshots, then
# 'key:"marts/person_features_daily"+ and not key:"marts/person_features_daily" and not group:ml', then
# 'group:ml' with `--partition <latest snapshot date>`
SNAPSHOTS = dg.AssetSelection.assets(dg.AssetKey(["marts", "person_features_daily"]))
BEFORE_SNAPSHOTS = dg.AssetSelection.all() - SNAPSHOTS.downstream()
MODELS = dg.AssetSelection.groups("ml")
"""Training, registry, decisions and evaluation: the last run, for the latest snapshot date."""
SYNCS = dg.AssetSelection.groups("activation")
"""The reverse-ETL syncs of the decisions, after the models."""
OUTCOMES = dg.AssetSelection.groups("outcomes")
"""The decisions' attributed outcomes and the lift guardrail: run by the loop (``orchestration.loop``)."""
AFTER_SNAPSHOTS = SNAPSHOTS.downstream() - SNAPSHOTS - MODELS - SYNCS - OUTCOMES

CANDIDATE = dg.AssetKey(["ml", "uplift_candidate"])
DECISIONS = dg.AssetKey(["ml", "nba_decisions"])
EVALUATION = dg.AssetKey(["ml", "policy_evaluation"])


def company_config(persons: int, days: int, seed: int) -> dict:
    """The run config of the simulated company asset."""
    return {"ops": {"simulated_company": {"config": {"persons": persons, "days": days, "seed": seed}}}}


def launch(
    instance: dg.DagsterInstance,
    selection: dg.AssetSelection,
    run_config: Mapping | None = None,
    partition_range: tuple[str, str] | None = None,
    partition_key: str | None = None,
) -> dg.JobExecutionResult:
    """Materialize the assets of ``selection`` in one run on ``instance``, in this process, over
    ``partition_range`` (first and last key, their backfill policy a single run) or for ``partition_key`` (the
    partitioned assets of the selection; the others unpartitioned) when given. As ``dg launch`` does: the code
    location's asset job, reconstructable from the module that defines it (loaded once per process)."""
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
    if partition_key is not None:
        tags = {PARTITION_NAME_TAG: partition_key}
    return dg.execute_job(
        repository.get_reconstructable_job(job.name),
        instance=instance,
        run_config=run_config,
        tags=tags,
        asset_selection=sorted(keys),
    )


def failure_message(result: dg.JobExecutionResult, selection: dg.AssetSelection) -> str:
    """Which run failed, and one line per failed step: the step and the innermost cause of its error."""
    lines = [f"the run {result.run_id} of {selection} failed"]
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        cause = error.message.strip() if error is not None else "failed"  # "<class>: <message>"
        lines.append(f"  {event.step_key}: {cause}")
    return "\n".join(lines)


def materialize(
    instance: dg.DagsterInstance,
    selection: dg.AssetSelection,
    run_config: Mapping | None = None,
    partition_range: tuple[str, str] | None = None,
    partition_key: str | None = None,
) -> dg.JobExecutionResult:
    """:func:`launch` the run; raise ``SystemExit`` naming the failed steps and their errors when it fails."""
    result = launch(instance, selection, run_config, partition_range, partition_key)
    if not result.success:
        raise SystemExit(failure_message(result, selection))
    return result


TOO_LITTLE_DATA = (
    "the uplift model could not be trained: a demo company of few days or persons holds too few decision "
    "dates or decisions per action to train and validate on (the default make demo, 10,000 persons x 30 "
    "days, does; `python -m orchestration.demo --without-models` builds the lake alone)"
)


def materialize_models(instance: dg.DagsterInstance, decision_date: str) -> dg.JobExecutionResult:
    """The models run: a candidate trained, registered and gated, the next-best actions of ``decision_date``
    decided and evaluated. ``SystemExit`` when it fails, saying so when the training failed (too little
    data)."""
    result = launch(instance, MODELS, partition_key=decision_date)
    if not result.success:
        message = failure_message(result, MODELS)
        if CANDIDATE.to_python_identifier() in result.get_failed_step_keys():
            message += "\n" + TOO_LITTLE_DATA
        raise SystemExit(message)
    return result


def _values(metadata: Mapping) -> dict:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def models_summary(result: dg.JobExecutionResult) -> list[str]:
    """What the models run built, from its materializations' metadata (aggregates only, no personal data): the
    gate's decision on the new version, the decisions per action and channel with the holdout, exploration and
    canary shares and the expected value, and the decision quality table."""
    built = {
        event.asset_key: _values(event.step_materialization_data.materialization.metadata)
        for event in result.get_asset_materialization_events()
    }
    candidate, decisions, evaluation = (built.get(key, {}) for key in (CANDIDATE, DECISIONS, EVALUATION))
    lines = []
    if candidate:
        lines += [
            f"model version {candidate['model_version']}: {candidate['gate_outcome']}"
            + (" (bootstrap promotion)" if candidate["bootstrap_promotion"] else ""),
            f"  gate: {candidate['gate_reason']}",
            f"  learned policy {candidate['policy_value_dr']:.4f} EUR per decision (doubly robust, 95% lower "
            f"bound {candidate['policy_value_dr_ci_low']:.4f}), logging policy "
            f"{candidate['logging_policy_value']:.4f}, on the out-of-time decisions",
        ]
    if decisions:
        who = (
            f"model version {decisions['model_version']}"
            if decisions["decided_by"] == "champion"
            else f"the fallback rules ({decisions['fallback_reason']})"
        )
        lines += [
            f"next-best actions of {decisions_date(result)} (policy {decisions['policy_version']}) by {who}: "
            f"{decisions['persons']:,} persons",
            f"  holdout {decisions['holdout_share']:.2%}, exploration {decisions['exploration_share']:.2%}, "
            f"canary {decisions['canary_share']:.2%}; expected incremental value "
            f"{decisions['expected_value_total']:,.2f} EUR",
            f"  {'channel':<8} {'action':<16} {'persons':>9}",
        ]
        per_channel = sorted(
            (key.partition("/")[2] or "-", key.partition("/")[0], n)
            for key, n in decisions["decisions"].items()
        )
        lines += [f"  {channel:<8} {action:<16} {n:>9,}" for channel, action, n in per_channel]
    if "table" in evaluation:
        lines += [
            "decision quality against the simulator's truth (EUR of expected revenue uplift net of the "
            "message cost):",
            evaluation["table"],
        ]
    elif "note" in evaluation:
        lines.append(f"decision quality: {evaluation['note']}")
    return lines


def syncs_summary(first: dg.JobExecutionResult, second: dg.JobExecutionResult, crm_url: str) -> list[str]:
    """What the two sync runs did (counts from their metadata) and what the CRM holds: its recommendations
    against the eligible persons of nba_current (decided an action, not holdout, a CRM contact, the channel's
    consent granted). Counts only, no personal data."""
    import psycopg

    from activation.config import load_syncs
    from activation.sync import read_source
    from lake.settings import get_settings

    lines = [
        f"  {'sync':<24} {'run':<6} {'added':>7} {'changed':>8} {'removed':>8} {'sent':>7} {'failed':>7}"
    ]
    for run, result in (("first", first), ("again", second)):
        built = {
            event.asset_key: _values(event.step_materialization_data.materialization.metadata)
            for event in result.get_asset_materialization_events()
        }
        for key in sorted(built, key=lambda k: k.to_user_string()):
            m = built[key]
            lines.append(
                f"  {key.path[-1]:<24} {run:<6} {m['added']:>7,} {m['changed']:>8,} {m['removed']:>8,} "
                f"{m['sent']:>7,} {m['failed']:>7,}  ({m['duration_s']:.2f} s)"
            )
    config = load_syncs()["crm_recommendations"]
    eligible, _, counts = read_source(config, get_settings())
    target = config.destination
    with psycopg.connect(crm_url, connect_timeout=10) as conn:
        held = conn.execute(f'select count(*) from "{target.schema_}"."{target.table}"').fetchone()[0]
    return [
        f"the CRM's {target.schema_}.{target.table} holds {held:,} recommendations for {eligible.height:,} "
        f"eligible persons of nba_current ({counts['source_rows']:,} decisions: {counts['not_actions']:,} "
        f"holdout or no_action or without a CRM contact, {counts['skipped_by_consent']:,} held back by "
        "consent)",
        *lines,
    ]


def decisions_date(result: dg.JobExecutionResult) -> str:
    """The partition (decision date) of a models run."""
    return result.dagster_run.tags[PARTITION_NAME_TAG]


def crm_location() -> str:
    """Where the CRM database is, without credentials: ``CRM_DATABASE_URL``'s host, or the embedded server's
    folder and how to stop it."""
    from activation.crm_server import URL_ENV, crm_data_dir
    from lake.settings import get_settings

    if os.environ.get(URL_ENV):
        return f"the PostgreSQL server of {URL_ENV}"
    return (
        f"embedded PostgreSQL in {crm_data_dir(get_settings())} (left running; python -m "
        "activation.crm_server stop)"
    )


def where_to_look(synced: bool = False) -> list[str]:
    """The commands that show what the demo built (and the CRM database, when it ``synced``)."""
    from lake.settings import get_settings, without_password

    settings = get_settings()
    return [
        "where to look:",
        f"  make mlflow  the MLflow UI on http://127.0.0.1:5000 over "
        f"{without_password(settings.mlflow_tracking_uri)}: runs, registered model versions, aliases, "
        "model cards",
        "  make dev     the Dagster UI on http://127.0.0.1:3000: these runs, every asset with its metadata, "
        "the promotion gate's check",
        *(
            [
                "  make sync ARGS='--log 10'  the sync runs and the records a destination refused",
                f"  the CRM     {crm_location()}",
            ]
            if synced
            else []
        ),
        f"  gold tables  {settings.lake_root}/gold/nba_decisions, nba_current, policy_evaluation",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the demo company's size and seed, run the materializations of ``make demo`` and print what was
    built."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--without-models",
        action="store_true",
        help="build the lake and the dbt models only: no training, decisions nor evaluation",
    )
    args = parser.parse_args(argv)

    from activation.crm_server import crm_database_url
    from lake import summary
    from lake.settings import get_settings
    from orchestration.evaluation import truth_summary

    # each run starts in this directory, as in a process of its own: dagster-dbt's threads that fetch row
    # counts change the working directory concurrently and can leave the process in the dbt project's
    here = os.getcwd()
    instance = dg.DagsterInstance.get()
    with contextlib.chdir(here):
        materialize(instance, BEFORE_SNAPSHOTS, company_config(args.persons, args.days, args.seed))
    dates = supported_snapshot_dates()
    with contextlib.chdir(here):
        materialize(instance, SNAPSHOTS, partition_range=dates)
    with contextlib.chdir(here):
        materialize(instance, AFTER_SNAPSHOTS)
    models = syncs = None
    if not args.without_models:
        with contextlib.chdir(here):
            models = materialize_models(instance, dates[1])
        crm_url = crm_database_url(get_settings())  # the embedded CRM started, unless CRM_DATABASE_URL is set
        runs = []
        for _ in range(2):  # the second run finds nothing changed and sends nothing
            with contextlib.chdir(here):
                runs.append(materialize(instance, SYNCS))
        syncs = tuple(runs)
    summary.main()
    for line in truth_summary(get_settings()):
        print(line)
    if models is not None:
        print("\n".join(models_summary(models)))
    if syncs is not None:
        print("\n".join(syncs_summary(*syncs, crm_url)))
    print("\n".join(where_to_look(synced=syncs is not None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
