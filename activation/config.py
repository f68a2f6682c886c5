"""Sync definitions: one YAML file per sync (``activation/syncs/<name>.yaml``, or the folder
``ACTIVATION_SYNCS_DIR``).

A sync names its source gold table, the key (the CRM's contact id), the mapping of destination columns to
source columns, its destination (kind and name) and what happens to removed rows. Credentials never come from
the file: a PostgreSQL destination reads its URL from the environment variable it names (``CRM_DATABASE_URL``
by default). Every file is validated on load; a problem raises :class:`SyncConfigError` naming the file, the
field and the problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from lake.settings import REPO_ROOT

SYNCS_DIR = REPO_ROOT / "activation" / "syncs"
"""The shipped sync definitions (``ACTIVATION_SYNCS_DIR`` overrides)."""

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)]


class SyncConfigError(ValueError):
    """A sync file is missing, unreadable or invalid (the message names the file, the field and the
    problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """The gold table a sync reads and the column that addresses the destination's record."""

    table: Identifier = "nba_current"
    key: Identifier = "crm_contact_id"


class Quota(_Strict):
    """An HTTP API's request quota: ``requests`` per rolling ``per_seconds``, and ``daily`` requests."""

    requests: int = Field(100, gt=0)
    per_seconds: float = Field(10.0, gt=0)
    daily: int = Field(250_000, gt=0)


class Destination(_Strict):
    """Where a sync writes: a PostgreSQL table (URL from the environment), an outbox folder of files, or the
    contacts of a HubSpot account (token from the environment)."""

    kind: Literal["postgres", "files", "hubspot"]
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$")]
    table: Identifier = "nba_recommendations"
    """PostgreSQL: the recommendations table (created when missing)."""
    schema_: Identifier = Field("public", alias="schema")
    """PostgreSQL: the schema of the table."""
    url_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")] = "CRM_DATABASE_URL"
    """PostgreSQL: the environment variable holding the server's URL."""
    formats: tuple[Literal["parquet", "csv"], ...] = ("parquet", "csv")
    """Files: the formats written to the outbox."""
    token_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")] = "HUBSPOT_ACCESS_TOKEN"
    """HubSpot: the environment variable holding the private app's access token."""
    base_url_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")] = "HUBSPOT_BASE_URL"
    """HubSpot: the environment variable that may hold another base URL than https://api.hubapi.com."""
    group: Identifier = "next_best_action"
    """HubSpot: the property group of the custom properties the sync creates."""
    batch_size: int = Field(100, ge=1, le=100)
    """HubSpot: records per batch upsert request (HubSpot takes at most 100)."""
    quota: Quota = Quota()
    """HubSpot: the account's documented limits for private apps (Free and Starter: 100 requests per 10 s and
    250,000 a day; Professional 190 and 650,000; Enterprise 190 and 1,000,000)."""


class SyncConfig(_Strict):
    """One sync: source, key, field mapping (destination column: source column), destination and mode."""

    name: Identifier
    source: Source = Source()
    fields: dict[Identifier, Identifier] = Field(min_length=1)
    destination: Destination
    mode: Literal["upsert"] = "upsert"
    contract: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    """The outbound data contract the payload is validated against
    (``activation/contracts/<name>.odcs.yaml``)."""
    removed: Literal["clear", "keep"] = "clear"
    """Rows gone from the source since the last sync: cleared at the destination, or left there. Rows whose
    channel consent was revoked are cleared either way."""
    path: Path | None = None

    @model_validator(mode="after")
    def _key_mapped(self) -> SyncConfig:
        if self.source.key not in self.fields.values():
            raise ValueError(f"the key column {self.source.key!r} must be mapped to a destination column")
        return self

    @property
    def key_column(self) -> str:
        """The destination column that holds the key."""
        return next(dest for dest, src in self.fields.items() if src == self.source.key)

    def database_url(self) -> str:
        """The PostgreSQL URL from the environment; a clear error when it is not set."""
        url = os.environ.get(self.destination.url_env, "")
        if not url:
            raise SyncConfigError(
                f"{self.path}: destination.url_env: the environment variable {self.destination.url_env} "
                "is not set (the PostgreSQL URL, e.g. postgresql://user@host:5432/crm)"
            )
        return url

    def hubspot_token(self) -> str | None:
        """The HubSpot access token from the environment, None when it is not set."""
        return os.environ.get(self.destination.token_env) or None


_CREDENTIAL_KEYS = re.compile(r"^(password|passwd|secret|token|api_key|url|dsn|credentials?)$", re.IGNORECASE)


def _credentials(node: object, where: str = "") -> list[str]:
    """Where a credential or a connection URL is written in the parsed file (keys named like one, ``://``)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if _CREDENTIAL_KEYS.match(str(key)):
                found.append(path)
            found += _credentials(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _credentials(value, f"{where}[{i}]")
    elif isinstance(node, str) and "://" in node:
        found.append(where)
    return found


def load_sync(path: Path) -> SyncConfig:
    """Read and validate one sync file; its name must be its file name."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SyncConfigError(f"{path}: cannot be read: {error}") from error
    if not isinstance(raw, dict):
        raise SyncConfigError(f"{path}: (top level): a mapping is expected")
    written = _credentials(raw)
    if written:
        raise SyncConfigError(
            f"{path}: {', '.join(written)}: a credential or connection URL is written in the file: "
            "credentials come from the environment only (destination.url_env names the variable)"
        )
    raw.setdefault("name", path.stem)
    try:
        config = SyncConfig.model_validate({**raw, "path": path})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        raise SyncConfigError(f"{path}: {problems}") from error
    if config.name != path.stem:
        raise SyncConfigError(f"{path}: name: {config.name!r} differs from the file name {path.stem!r}")
    return config


def syncs_dir() -> Path:
    """The folder of sync files: ``ACTIVATION_SYNCS_DIR`` or the shipped ``activation/syncs``."""
    return Path(os.environ.get("ACTIVATION_SYNCS_DIR") or SYNCS_DIR)


def scan_syncs(folder: Path | None = None) -> tuple[dict[str, SyncConfig], dict[Path, str]]:
    """Every sync file of the folder (``*.yaml``, sorted) loaded on its own: the valid syncs by name, and the
    problem of each invalid file, which leaves out its own sync only."""
    syncs, problems = {}, {}
    for path in sorted((folder or syncs_dir()).glob("*.yaml")):
        try:
            config = load_sync(path)
        except SyncConfigError as error:
            problems[path] = str(error)
        else:
            syncs[config.name] = config
    return syncs, problems


def load_syncs(folder: Path | None = None) -> dict[str, SyncConfig]:
    """Every sync of the folder, by name; :class:`SyncConfigError` naming every invalid file."""
    syncs, problems = scan_syncs(folder)
    if problems:
        raise SyncConfigError("; ".join(problems.values()))
    return syncs
