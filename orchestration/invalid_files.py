"""Assets that stand for configuration files that did not load (data contracts, sync files): a bad file
leaves out only what it configures, and the UI shows which file, why, and what was left out."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import dagster as dg


def invalid_file_spec(group: str, path: Path, name: str, left_out: str, messages: list[str]) -> dg.AssetSpec:
    """The asset ``<group>/<name>`` of the file at ``path`` that did not load, in ``group``, described by its
    problems (``messages``) and by ``left_out`` (what is missing from the code location because of it); each
    problem is logged as a warning when the definitions load."""
    for message in messages:
        logging.getLogger(__name__).warning("%s: %s", left_out, message)
    return dg.AssetSpec(
        key=dg.AssetKey([group, re.sub(r"[^A-Za-z0-9_]", "_", name)]),
        description=f"`{path.name}` is invalid, so {left_out}: " + "; ".join(messages),
        group_name=group,
        kinds={"yaml"},
        metadata={"file": dg.MetadataValue.path(str(path)), "problems": messages},
        tags={"file_status": "invalid"},
    )
