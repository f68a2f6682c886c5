"""Failed runs recorded where an operator reads them: one row per failed step (the job, the run, the
partition, the step, the innermost error's class and message) appended to the Delta table ``ops/run_failures``
of the lake, the same row in the sensor's log, and the run tagged ``ops/failure_recorded``. Messages pass
through :func:`redact` first: an e-mail address, a phone or card number or an IP address quoted by an error
never reaches the table."""

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from lake import delta
from lake.settings import Settings
from orchestration.resources import LakeResource
from orchestration.sensors import sensor_status

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

RUN_FAILURES = ("ops", "run_failures")
"""The zone and name of the failures table."""
RECORDED_TAG = "ops/failure_recorded"
MESSAGE_CHARS = 500

_PERSONAL = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"), "<ip>"),
    # seven digits or more, spaced or not, that are not a date nor part of an id
    (re.compile(r"(?<![\w-])(?!\d{4}-\d{2}-\d{2}(?!\d))\+?\d(?:[ ()./-]?\d){6,}(?!\w)"), "<number>"),
]


def redact(message: str) -> str:
    """``message`` on one line, at most ``MESSAGE_CHARS`` characters, with e-mail addresses, IP addresses and
    long digit sequences (phone, card, account numbers) replaced by a placeholder."""
    for pattern, placeholder in _PERSONAL:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())[:MESSAGE_CHARS]


@dataclass(frozen=True)
class RunFailure:
    """One failed step of a run (``step`` empty when the run failed outside any step)."""

    failed_at: datetime
    job_name: str
    run_id: str
    partition: str
    step: str
    error_class: str
    message: str

    def describe(self) -> str:
        """The failure on one line, for the sensor's log."""
        where = f"{self.job_name} run {self.run_id}" + (f" [{self.partition}]" if self.partition else "")
        return f"{where} step {self.step or '-'}: {self.error_class}: {self.message}"


def _innermost(error: "SerializableErrorInfo | None") -> "SerializableErrorInfo | None":
    while error is not None and error.cause is not None:
        error = error.cause
    return error


def run_failures(instance: dg.DagsterInstance, run: dg.DagsterRun, run_message: str) -> list[RunFailure]:
    """The failed steps of ``run`` from its event log, each with its innermost error; one row with
    ``run_message`` when no step failed (the run failed to start, or was ended from outside)."""
    now = datetime.now(UTC)
    partition = run.tags.get("dagster/partition", "")
    failures = []
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        error = _innermost(event.step_failure_data.error)
        message = error.message.strip() if error else event.message or ""
        if error and error.cls_name:
            message = message.removeprefix(f"{error.cls_name}: ")  # "<class>: <message>"
        failures.append(
            RunFailure(
                now,
                run.job_name,
                run.run_id,
                partition,
                event.step_key or "",
                (error.cls_name if error else None) or "Error",
                redact(message),
            )
        )
    if failures:
        return failures
    return [RunFailure(now, run.job_name, run.run_id, partition, "", "RunFailure", redact(run_message))]


def failures_uri(settings: Settings) -> str:
    """Where the failures table is: ``<lake root>/ops/run_failures``."""
    return delta.table_uri(settings, *RUN_FAILURES)


def record_failures(settings: Settings, failures: Sequence[RunFailure]) -> int:
    """Append ``failures`` to the failures table, unless their run is there already (a tick evaluated twice);
    the rows appended."""
    if not failures:
        return 0
    uri = failures_uri(settings)
    known = delta.scan(uri, settings.storage_options)
    run_ids = {f.run_id for f in failures}
    if known is not None and known.filter(pl.col("run_id").is_in(run_ids)).select(pl.len()).collect().item():
        return 0
    rows = pl.DataFrame([asdict(f) for f in failures])
    delta.append(uri, rows.to_arrow(), storage_options=settings.storage_options)
    return len(failures)


@dg.run_failure_sensor(
    name="record_run_failures",
    monitor_all_code_locations=False,
    default_status=sensor_status(),
    description="When any run of this code location fails: one row per failed step (job, run id, partition, "
    "step, error class, message with personal data masked) appended to the lake's Delta table "
    "ops/run_failures, the same line in this sensor's log, and the tag ops/failure_recorded on the run.",
)
def record_run_failures(context: dg.RunFailureSensorContext, lake: LakeResource) -> None:
    """Record the failed run's steps (thin over :func:`run_failures` and :func:`record_failures`)."""
    settings = lake.settings()
    failures = run_failures(context.instance, context.dagster_run, context.failure_event.message or "")
    for failure in failures:
        context.log.error(failure.describe())
    record_failures(settings, failures)
    context.instance.add_run_tags(context.dagster_run.run_id, {RECORDED_TAG: failures_uri(settings)})
