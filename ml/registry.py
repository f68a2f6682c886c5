"""The model registry: every trained candidate registered in MLflow, the promotion gate, approval and
rollback.

The registered model (``MlSettings.model_name``) carries three aliases:

- ``champion``: the version that decides (``models:/<name>@champion``);
- ``challenger``: the latest candidate that was not promoted (or that waits for approval); it scores the same
  persons as the champion in the shadow table and never decides;
- ``pending``: a candidate that passed the gate and waits for ``python -m ml.registry approve`` (only when
  ``PROMOTION_REQUIRES_APPROVAL`` is on).

Every version is tagged with its off-policy figures, the run and the data it learned from; its description is
the model card followed by a "Registry log" of what happened to it (gate, promotion, approval, rollback). The
registered model's tag ``champion_history`` keeps the versions that were champion, oldest first, so that a
rollback can go back one step at a time, repeatedly.

mlflow is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml.settings import MlSettings, get_ml_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ml.ope import PolicyValue

CHAMPION = "champion"
CHALLENGER = "challenger"
PENDING = "pending"
HISTORY_TAG = "champion_history"
"""Registered-model tag: JSON list of ``{"version", "since", "how"}``, one entry per champion, oldest
first."""
HISTORY_LIMIT = 200
"""Champions kept in the history tag (the oldest are dropped beyond it; the tag value has a size limit)."""
LOG_HEADER = "## Registry log"
APPROVE_COMMAND = "python -m ml.registry approve"
"""The command that promotes the version pending approval (``--version N`` checks which)."""
ROLLBACK_COMMAND = 'python -m ml.registry rollback --reason "..."'
"""The command that moves ``champion`` back to the previous champion."""

OUTCOME_CHAMPION = "champion"
OUTCOME_PENDING = "pending"
OUTCOME_CHALLENGER = "challenger"
OUTCOME_REJECTED = "rejected"


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (nothing pending, no previous champion, ...)."""


@dataclass(frozen=True)
class GateDecision:
    """The promotion gate's verdict on a candidate: promote or not, whether as the first (bootstrap) champion,
    and why (a sentence with the figures compared)."""

    promote: bool
    bootstrap: bool
    reason: str
    rejected: bool = False
    """Failed its quality checks: not promoted and not made challenger either."""


@dataclass(frozen=True)
class ChampionChange:
    """A move of the ``champion`` alias: from which version to which, how (bootstrap, gate, approval,
    rollback), when (UTC, ISO 8601) and why."""

    previous: str | None
    current: str
    how: str
    at: str
    reason: str


@dataclass(frozen=True)
class RegistryState:
    """Where the aliases point and the champions so far (oldest first)."""

    model_name: str
    champion: str | None
    challenger: str | None
    pending: str | None
    history: tuple[str, ...]
    versions: dict[str, dict[str, str]]
    """Tags of the versions the aliases point to, by version."""
    registered_at: dict[str, datetime] = field(default_factory=dict)
    """When the versions the aliases point to were registered (UTC), by version."""

    def latest_gated(self) -> str | None:
        """The version among the aliases' that went through the gate last (None when none did)."""
        gated = [v for v, tags in self.versions.items() if tags.get("gate.at")]
        return max(gated, key=lambda v: self.versions[v]["gate.at"], default=None)

    def overview(self, now: datetime) -> dict[str, str | float | None]:
        """What an operator needs to see (plain values, no personal data): the aliases, the champion's age and
        since when it serves, the latest gate outcome and reason, and the commands to approve or roll back."""
        champion_tags = self.versions.get(self.champion, {}) if self.champion else {}
        registered = self.registered_at.get(self.champion) if self.champion else None
        latest = self.latest_gated()
        latest_tags = self.versions.get(latest, {}) if latest else {}
        return {
            "model_name": self.model_name,
            "champion": self.champion,
            "challenger": self.challenger,
            "pending_approval": self.pending,
            "champion_registered_at": registered.isoformat(timespec="seconds") if registered else None,
            "champion_age_days": (now - registered).total_seconds() / 86_400 if registered else None,
            "champion_since": champion_tags.get("restored.at") or champion_tags.get("promotion.at"),
            "latest_gated_version": latest,
            "gate_outcome": latest_tags.get("gate.outcome"),
            "gate_reason": latest_tags.get("gate.reason"),
            "approve_command": f"{APPROVE_COMMAND} --version {self.pending}" if self.pending else None,
            "rollback_command": ROLLBACK_COMMAND if len(self.history) > 1 else None,
            "champion_history": " -> ".join(self.history) or None,
        }

    def describe(self) -> str:
        """Lines for people: each alias with its version's off-policy figures and gate outcome."""
        lines = [f"registered model {self.model_name}"]
        for alias in (CHAMPION, CHALLENGER, PENDING):
            version = getattr(self, alias)
            if version is None:
                lines.append(f"{alias}: none")
                continue
            tags = self.versions.get(version, {})
            figures = _figures(tags)
            lines.append(f"{alias}: version {version}" + (f" ({figures})" if figures else ""))
            if tags.get("gate.reason"):
                lines.append(f"  gate: {tags['gate.reason']}")
        lines.append("champion history (oldest first): " + (" -> ".join(self.history) or "none"))
        return "\n".join(lines)


def _figures(tags: dict[str, str]) -> str:
    if "ope.value" not in tags:
        return ""
    parts = [
        f"{tags.get('ope.estimator', 'value')} {float(tags['ope.value']):.4f} "
        f"[{float(tags['ope.ci_low']):.4f}, {float(tags['ope.ci_high']):.4f}]",
    ]
    if "logging.value" in tags:
        parts.append(f"logging policy {float(tags['logging.value']):.4f}")
    if "ope.support" in tags:
        parts.append(f"support {float(tags['ope.support']):.3f}")
    return ", ".join(parts)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _settings(settings: MlSettings | None) -> MlSettings:
    return settings if settings is not None else get_ml_settings()


def _client(settings: MlSettings) -> MlflowClient:
    from lake.settings import disable_telemetry

    disable_telemetry()
    settings.create_store_folder()
    import mlflow

    # MLflow resolves a version's source model (models:/m-...) through the process-wide tracking URI, whatever
    # the client's: point it at the same store
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _version_number(version: ModelVersion | str | int) -> str:
    return str(getattr(version, "version", version))


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """The registered model's aliases (alias -> version), empty when the model is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in model.aliases.items()}


def _history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return json.loads(tags.get(HISTORY_TAG) or "[]")


def _append_log(client: MlflowClient, name: str, version: str, line: str) -> None:
    """Append one line to the version description's registry log (created after the model card)."""
    description = client.get_model_version(name, version).description or ""
    if LOG_HEADER not in description:
        description = description.rstrip() + ("\n\n" if description.strip() else "") + LOG_HEADER + "\n"
    description = description.rstrip("\n") + f"\n- {line}\n"
    client.update_model_version(name, version, description=description)


def _set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def _policy_value_tags(prefix: str, value: PolicyValue) -> dict[str, str]:
    return {
        f"{prefix}.estimator": value.estimator,
        f"{prefix}.value": repr(float(value.value)),
        f"{prefix}.ci_low": repr(float(value.ci_low)),
        f"{prefix}.ci_high": repr(float(value.ci_high)),
        f"{prefix}.confidence": repr(float(value.confidence)),
        f"{prefix}.effective_sample_size": repr(float(value.effective_sample_size)),
        f"{prefix}.support": repr(float(value.support)),
        f"{prefix}.n": str(int(value.n)),
        f"{prefix}.unsupported": str(bool(value.unsupported)).lower(),
    }


def _training_data(client: MlflowClient, run_id: str) -> str:
    """The datasets the run logged as inputs (name, source such as the Delta table's path and version,
    digest), as JSON; ``[]`` when the run logged none."""
    inputs = client.get_run(run_id).inputs
    datasets = [
        {
            "name": item.dataset.name,
            "source_type": item.dataset.source_type,
            "source": json.loads(item.dataset.source) if item.dataset.source else None,
            "digest": item.dataset.digest,
        }
        for item in (inputs.dataset_inputs if inputs else [])
    ]
    return json.dumps(datasets, sort_keys=True)


def register_candidate(
    model_uri: str,
    run_id: str,
    evaluation: PolicyValue,
    logging_value: PolicyValue,
    card: str,
    settings: MlSettings | None = None,
) -> ModelVersion:
    """Register a trained candidate as a new version of the registered model (created when missing).

    ``model_uri`` is what ``log_model`` returned (``models:/<model id>`` in MLflow 3, or any source the
    registry accepts). The version is tagged with the candidate's off-policy figures on the latest out-of-time
    logs (``ope.*``), the logging policy's value on the same logs (``logging.*``), its run id and the datasets
    the run learned from (``training_data``); its description is the model card. No alias is set here: the
    gate decides (:func:`gate`, :func:`apply_gate`).
    """
    from mlflow.exceptions import MlflowException

    settings = _settings(settings)
    client = _client(settings)
    name = settings.model_name
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(
            name,
            description=(
                "Uplift models of the next-best action. Alias champion decides, challenger is scored in "
                "shadow, pending waits for approval (python -m ml.registry status)."
            ),
        )
    model_id = None
    if model_uri.startswith("models:/"):
        rest = model_uri.removeprefix("models:/")
        if "/" not in rest and "@" not in rest:
            model_id = rest
    tags = {
        **_policy_value_tags("ope", evaluation),
        **_policy_value_tags("logging", logging_value),
        "run_id": run_id,
        "training_data": _training_data(client, run_id),
        "registered_at": _now(),
    }
    return client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=tags, description=card, model_id=model_id
    )


def _check_same_logs(candidate: PolicyValue, other: PolicyValue, what: str) -> None:
    if other.n != candidate.n:
        raise ValueError(
            f"the candidate was evaluated on {candidate.n} decisions and {what} on {other.n}: both must be "
            "estimated on the same latest logs"
        )


def gate(
    candidate: PolicyValue,
    champion: PolicyValue | None,
    logging_value: PolicyValue,
    margin: float,
    passed_quality_checks: bool,
) -> GateDecision:
    """Decide whether a candidate becomes champion (pure: the caller estimates every value on the SAME latest
    out-of-time logs, the champion's included, with the same estimator).

    - No champion yet (``champion is None``): bootstrap; the candidate is promoted when it passed its quality
      checks.
    - Otherwise it is promoted only when all hold: it passed its quality checks; its estimate is supported
      (not ``unsupported``); the lower bound of its interval beats the logging policy's value; and its value
      beats the champion's by the margin: ``value > champion + margin * scale`` with
      ``scale = max(|champion value|, |logging policy value|)``. The margin is relative to the champion's
      value; the logging policy's value on the same logs (same units, same logs) stands in when the champion's
      value is nearer to 0, so that a champion worth about nothing does not shrink the margin to nothing.
    """
    if not margin >= 0:
        raise ValueError(f"margin {margin!r} must be a non-negative number")
    _check_same_logs(candidate, logging_value, "the logging policy")
    finite = math.isfinite(candidate.value) and math.isfinite(candidate.ci_low)
    figures = (
        f"{candidate.estimator} value {candidate.value:.4f} "
        f"[{candidate.ci_low:.4f}, {candidate.ci_high:.4f}], logging policy {logging_value.value:.4f}, "
        f"support {candidate.support:.3f}, n {candidate.n}"
    )
    if champion is None:
        if passed_quality_checks:
            beats = finite and candidate.ci_low > logging_value.value
            note = "beats" if beats else "does not beat"
            return GateDecision(
                True,
                True,
                f"bootstrap promotion: no champion yet and the candidate passed its quality checks "
                f"(its interval's lower bound {note} the logging policy; {figures})",
            )
        return GateDecision(
            False,
            True,
            f"refused: no champion yet but the candidate failed its quality checks ({figures})",
            rejected=True,
        )
    _check_same_logs(candidate, champion, "the champion")
    if champion.estimator != candidate.estimator:
        raise ValueError(
            f"the candidate's value is a {candidate.estimator} estimate and the champion's a "
            f"{champion.estimator} estimate: compare the same estimator"
        )
    failures = []
    if not passed_quality_checks:
        failures.append("it failed its quality checks")
    if candidate.unsupported:
        failures.append(
            f"its choices are outside the logging policy's support (support {candidate.support:.3f})"
        )
    if not finite:
        failures.append("its value could not be estimated")
    elif not candidate.ci_low > logging_value.value:
        failures.append(
            f"its interval's lower bound {candidate.ci_low:.4f} does not beat the logging policy's "
            f"{logging_value.value:.4f}"
        )
    if not math.isfinite(champion.value):
        failures.append("the champion's value on the same logs could not be estimated")
        required = math.nan
    else:
        scale = max(abs(champion.value), abs(logging_value.value))
        required = champion.value + margin * scale
        if finite and not candidate.value > required:
            failures.append(
                f"its value {candidate.value:.4f} does not beat the champion's {champion.value:.4f} by the "
                f"margin ({margin:g} x {scale:.4f}: needs more than {required:.4f})"
            )
    champion_note = " (the champion's estimate is outside the support too)" if champion.unsupported else ""
    if failures:
        reason = "refused: " + "; ".join(failures) + f" ({figures})" + champion_note
        return GateDecision(False, False, reason, rejected=not passed_quality_checks)
    return GateDecision(
        True,
        False,
        f"promoted: value {candidate.value:.4f} beats the champion's {champion.value:.4f} by the margin "
        f"(needs more than {required:.4f}) and its interval's lower bound {candidate.ci_low:.4f} beats the "
        f"logging policy's {logging_value.value:.4f} ({figures})" + champion_note,
    )


def _promote(client: MlflowClient, name: str, version: str, how: str, reason: str) -> ChampionChange:
    """Point ``champion`` at ``version``, clear the aliases it held as a candidate, record it on both versions
    and push it on the champion history."""
    aliases = _aliases(client, name)
    previous = aliases.get(CHAMPION)
    at = _now()
    if previous == version:
        return ChampionChange(previous, version, how, at, reason)
    client.set_registered_model_alias(name, CHAMPION, version)
    for alias in (CHALLENGER, PENDING):
        if aliases.get(alias) == version:
            client.delete_registered_model_alias(name, alias)
    history = _history(client, name)
    if previous is not None and (not history or history[-1]["version"] != previous):
        history.append({"version": previous, "since": "", "how": "unrecorded"})
    history.append({"version": version, "since": at, "how": how})
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))
    _set_tags(client, name, version, {"promotion.how": how, "promotion.at": at})
    _append_log(client, name, version, f"champion ({how}) at {at}, replacing version {previous or 'none'}")
    if previous is not None:
        _set_tags(client, name, previous, {"replaced_by": version, "replaced_at": at})
        _append_log(client, name, previous, f"replaced as champion by version {version} at {at}")
    return ChampionChange(previous, version, how, at, reason)


def apply_gate(
    version: ModelVersion | str | int,
    decision: GateDecision,
    requires_approval: bool,
    settings: MlSettings | None = None,
) -> str:
    """Carry out the gate's decision on a registered version and record it (tags ``gate.*``, among them
    ``gate.champion``, the champion it was compared with; a "gate" line in the description). Returns the
    outcome:

    - ``champion``: promoted (``champion`` alias moved, bootstrap or gate);
    - ``pending``: promoted but waiting for approval (aliases ``pending`` and ``challenger``);
    - ``challenger``: not promoted, it is the challenger (scored in shadow);
    - ``rejected``: failed its quality checks; no alias.
    """
    settings = _settings(settings)
    client = _client(settings)
    name = settings.model_name
    version = _version_number(version)
    aliases = _aliases(client, name)
    if decision.promote and decision.bootstrap and aliases.get(CHAMPION):
        raise RegistryError(
            f"a bootstrap promotion applies only when there is no champion; version {aliases[CHAMPION]} is "
            "champion: evaluate it on the same logs and gate against it"
        )
    at = _now()
    if decision.promote and requires_approval:
        outcome = OUTCOME_PENDING
    elif decision.promote:
        outcome = OUTCOME_CHAMPION
    elif decision.rejected:
        outcome = OUTCOME_REJECTED
    else:
        outcome = OUTCOME_CHALLENGER
    _set_tags(
        client,
        name,
        version,
        {
            "gate.outcome": outcome,
            "gate.promote": str(decision.promote).lower(),
            "gate.bootstrap": str(decision.bootstrap).lower(),
            "gate.reason": decision.reason,
            "gate.at": at,
            "gate.champion": aliases.get(CHAMPION) or "none",
        },
    )
    _append_log(client, name, version, f"gate at {at}: {outcome}: {decision.reason}")
    if outcome == OUTCOME_CHAMPION:
        _promote(client, name, version, "bootstrap" if decision.bootstrap else "gate", decision.reason)
    elif outcome == OUTCOME_PENDING:
        superseded = aliases.get(PENDING)
        if superseded is not None and superseded != version:
            _set_tags(client, name, superseded, {"promotion.status": f"superseded by version {version}"})
            _append_log(
                client, name, superseded, f"pending promotion superseded by version {version} at {at}"
            )
        client.set_registered_model_alias(name, PENDING, version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        _set_tags(client, name, version, {"promotion.status": "pending", "promotion.pending_since": at})
    elif outcome == OUTCOME_CHALLENGER:
        client.set_registered_model_alias(name, CHALLENGER, version)
    return outcome


def _by_alias(alias: str, settings: MlSettings | None) -> ModelVersion | None:
    settings = _settings(settings)
    client = _client(settings)
    version = _aliases(client, settings.model_name).get(alias)
    return None if version is None else client.get_model_version(settings.model_name, version)


def champion(settings: MlSettings | None = None) -> ModelVersion | None:
    """The version behind ``champion``, or None."""
    return _by_alias(CHAMPION, settings)


def challenger(settings: MlSettings | None = None) -> ModelVersion | None:
    """The version behind ``challenger``, or None."""
    return _by_alias(CHALLENGER, settings)


def pending_promotion(settings: MlSettings | None = None) -> ModelVersion | None:
    """The version that passed the gate and waits for approval (alias ``pending``), or None."""
    return _by_alias(PENDING, settings)


def approve(
    version: str | int | None = None, by: str | None = None, settings: MlSettings | None = None
) -> ChampionChange:
    """Promote the pending version to champion, recording who approved it and when (tags
    ``promotion.approved_by``, ``promotion.approved_at``). ``version``, when given, must be the pending one;
    ``by`` defaults to the operating system user (an operator's handle: it is stored in MLflow). Raises
    :class:`RegistryError` when nothing is pending, or when the champion changed since the version was gated
    (a rollback or another promotion: the gate's comparison no longer holds)."""
    settings = _settings(settings)
    client = _client(settings)
    name = settings.model_name
    pending = _aliases(client, name).get(PENDING)
    if pending is None:
        raise RegistryError(f"nothing to approve: no version of {name} is pending promotion")
    if version is not None and str(version) != pending:
        raise RegistryError(f"version {version} is not pending promotion (version {pending} is)")
    approver = (by or getpass.getuser()).strip()
    if not approver:
        raise RegistryError("say who approves (--by)")
    tags = client.get_model_version(name, pending).tags
    gated_against = tags.get("gate.champion", "none")
    current = _aliases(client, name).get(CHAMPION) or "none"
    if gated_against != current:
        raise RegistryError(
            f"version {pending} was gated against champion {gated_against} but the champion is now "
            f"{current}: evaluate it against the current champion (retrain or gate it again) before approving"
        )
    bootstrap = tags.get("gate.bootstrap") == "true"
    at = _now()
    _set_tags(
        client,
        name,
        pending,
        {"promotion.status": "approved", "promotion.approved_by": approver, "promotion.approved_at": at},
    )
    _append_log(client, name, pending, f"promotion approved by {approver} at {at}")
    how = "bootstrap, approved" if bootstrap else "gate, approved"
    return _promote(client, name, pending, how, f"approved by {approver}")


def rollback(reason: str, settings: MlSettings | None = None) -> ChampionChange:
    """Move ``champion`` back to the previous champion of the history, recording the reason and the time on
    both versions (tags ``rollback.*`` on the demoted one, ``restored.*`` on the restored one). Repeated
    rollbacks go further back one champion at a time. Raises :class:`RegistryError` without a previous
    champion."""
    reason = reason.strip()
    if not reason:
        raise RegistryError("a rollback needs a reason (--reason)")
    settings = _settings(settings)
    client = _client(settings)
    name = settings.model_name
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise RegistryError(f"nothing to roll back: {name} has no champion")
    history = _history(client, name)
    if not history or history[-1]["version"] != current:
        history.append({"version": current, "since": "", "how": "unrecorded"})
    while len(history) > 1 and history[-2]["version"] == current:
        history.pop(-2)
    if len(history) < 2:
        raise RegistryError(f"nothing to roll back to: version {current} is the only champion {name} has had")
    history.pop()
    previous = history[-1]["version"]
    at = _now()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    _set_tags(
        client,
        name,
        current,
        {"rollback.reason": reason, "rollback.at": at, "rollback.to": previous},
    )
    _append_log(client, name, current, f"rolled back at {at} to version {previous}: {reason}")
    _set_tags(
        client,
        name,
        previous,
        {"restored.reason": reason, "restored.at": at, "restored.from": current},
    )
    _append_log(client, name, previous, f"champion again at {at} (rollback from version {current}): {reason}")
    return ChampionChange(current, previous, "rollback", at, reason)


def registry_state(settings: MlSettings | None = None) -> RegistryState:
    """Where the aliases point, their versions' tags and the champion history."""
    settings = _settings(settings)
    client = _client(settings)
    name = settings.model_name
    aliases = _aliases(client, name)
    held = {
        version: client.get_model_version(name, version)
        for version in {aliases.get(a) for a in (CHAMPION, CHALLENGER, PENDING)} - {None}
    }
    return RegistryState(
        model_name=name,
        champion=aliases.get(CHAMPION),
        challenger=aliases.get(CHALLENGER),
        pending=aliases.get(PENDING),
        history=tuple(entry["version"] for entry in _history(client, name)),
        versions={version: dict(mv.tags) for version, mv in held.items()},
        registered_at={
            version: datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC) for version, mv in held.items()
        },
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.registry status | approve [--version N] [--by NAME] | rollback --reason TEXT``."""
    parser = argparse.ArgumentParser(
        prog="python -m ml.registry",
        description="Registry of the next-best-action models: aliases, pending promotion, approval, "
        "rollback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "status", help="where champion, challenger and pending point, and the champion history"
    )
    approve_parser = commands.add_parser("approve", help="promote the pending version to champion")
    approve_parser.add_argument("--version", help="the pending version (checked when given)")
    approve_parser.add_argument("--by", help="who approves (default: the operating system user)")
    rollback_parser = commands.add_parser("rollback", help="move champion back to the previous champion")
    rollback_parser.add_argument("--reason", required=True, help="why (recorded on both versions)")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(registry_state().describe())
        elif args.command == "approve":
            change = approve(args.version, args.by)
            print(
                f"approved: version {change.current} is champion (was {change.previous or 'none'}); "
                f"approval recorded on the version at {change.at}"
            )
        else:
            change = rollback(args.reason)
            print(
                f"rolled back: champion moved from version {change.previous} to version {change.current} "
                f"at {change.at}; reason recorded on both versions"
            )
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
