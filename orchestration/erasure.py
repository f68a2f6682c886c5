"""The erasure job: forget persons on request (the work is :func:`lake.erasure.erase`)."""

from typing import Literal

import dagster as dg

from lake.erasure import ErasureRequest, erase
from orchestration.resources import WAREHOUSE_POOL, LakeResource


class PersonToErase(dg.Config):
    """One request: the person named by a CRM contact, shop customer or app user id. Requests by e-mail
    address go through ``python -m lake.erasure --email``, so that no address is kept in Dagster's run
    history."""

    kind: Literal["crm_contact_id", "shop_customer_id", "app_user_id"]
    value: str
    request_id: str = ""
    """A reference without personal data (a ticket number); derived from a keyed hash when empty."""


class ErasureConfig(dg.Config):
    """The requests of one run."""

    requests: list[PersonToErase]


@dg.op(pool=WAREHOUSE_POOL)
def erase_requested_persons(
    context: dg.OpExecutionContext, config: ErasureConfig, lake: LakeResource
) -> None:
    """Erase every requested person from every zone of the lake and from the warehouse (see ``lake.erasure``);
    logs what was done per request and table, without personal data."""
    requests = [ErasureRequest(r.kind, r.value, r.request_id) for r in config.requests]
    for report in erase(lake.settings(), requests):
        context.log.info(f"{report.request_id}: {report.identifiers} identifiers suppressed")
        for table in report.tables:
            context.log.info(f"{report.request_id}: {table.table} {table.action} {table.rows}")


@dg.job(
    name="erase_persons",
    description="Erase persons on request (right to be forgotten): their recommendations cleared at every "
    "sync destination (the CRM's table, the outbox) and from the activation zone, their records removed from "
    "landing, bronze, quarantine, silver, gold and the warehouse, orders de-identified, identifiers "
    "suppressed. Run it while no ingestion and no sync runs.",
)
def erasure_job():
    erase_requested_persons()
