"""The state a simulation run leaves behind, persisted beside its truth so that the company can be continued
day by day (:mod:`simulator.advance`).

Everything that carries from one day to the next and is not redrawn from the seed: the company's domain
states, the positions of the random generators, each connector's rows and log positions and its sink's topic
offsets, the clickstream writer's batch count, the recommendations table as the CRM's CDC last captured it,
and the next day to simulate. The world (people, contacts, devices, response model) is drawn again from the
seed.

The file is ``<truth>/state/simulator.pkl``: one JSON header line (format name, version, SHA-256 and length
of the payload) and a pickle payload. :func:`load_state` checks the header before unpickling, so a file of
another format or version, or a truncated or altered one, is refused; the payload is only ever a file this
module wrote (pickle must not be used on files of unknown origin).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import SimulationConfig

STATE_FORMAT = "simulator-state"
STATE_VERSION = 1
"""Bumped whenever what is persisted changes: an older state is refused, not misread."""
STATE_FILE = Path("state") / "simulator.pkl"
RECOMMENDATION_COLUMNS = {
    "contact_id": pl.Int64,
    "decision_id": pl.String,
    "decision_date": pl.Date,
    "action": pl.String,
    "channel": pl.String,
    "expected_value": pl.Float64,
    "model_version": pl.String,
    "policy_version": pl.String,
}
"""The columns of the CRM's ``public.nba_recommendations`` the campaign tool reads and its CDC captures."""


class StateError(RuntimeError):
    """The persisted state is missing, of another format or version, or damaged."""


@dataclass
class SimulatorState:
    """What a run persists to be continued: see the module docstring."""

    config: SimulationConfig
    next_day: int
    """The number of the next day to simulate (0 is the first day of the generated window)."""
    company: object
    """The :class:`~simulator.company.CompanyState`."""
    rngs: dict[str, dict]
    """Bit-generator states of the company's, the connectors' and the clickstream's random generators."""
    connectors: dict[str, dict]
    """Per connector (``crm``, ``shop``): see :meth:`simulator.debezium.Connector.export_state`."""
    clicks: dict
    """See :meth:`simulator.clickstream.ClickstreamWriter.export_state`."""
    recommendations: pl.DataFrame
    """The CRM's recommendations table as its CDC last captured it (``RECOMMENDATION_COLUMNS``)."""


def empty_recommendations() -> pl.DataFrame:
    """A recommendations table with no row."""
    return pl.DataFrame(schema=RECOMMENDATION_COLUMNS)


def rng_state(rng: np.random.Generator) -> dict:
    """The position of a random generator (a plain dict)."""
    return rng.bit_generator.state


def restored_rng(state: dict) -> np.random.Generator:
    """A random generator at the saved position."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def _frame_from_ipc(data: bytes) -> pl.DataFrame:
    """A polars frame from its Arrow IPC bytes (see :class:`_CanonicalPickler`)."""
    return pl.read_ipc(io.BytesIO(data))


class _CanonicalPickler(pickle.Pickler):
    """Pickles polars frames as Arrow IPC in the oldest compatibility level: equal frames give equal bytes
    (polars' own pickling keeps the layout of its string buffers, which differs between equal frames)."""

    def reducer_override(self, obj):
        """Frames as IPC bytes; everything else as usual."""
        if isinstance(obj, pl.DataFrame):
            data = io.BytesIO()
            obj.write_ipc(data, compression="uncompressed", compat_level=pl.CompatLevel.oldest())
            return _frame_from_ipc, (data.getvalue(),)
        return NotImplemented


def save_state(truth: Path, state: SimulatorState) -> Path:
    """Write ``state`` to ``<truth>/state/simulator.pkl`` atomically (a crash leaves the previous file)."""
    path = Path(truth) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    pickler = _CanonicalPickler(buffer, protocol=5)
    pickler.fast = True  # no memo: the bytes do not depend on which equal objects happen to be shared
    pickler.dump(state)
    payload = buffer.getvalue()
    header = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "next_day": state.next_day,
    }
    partial = path.with_suffix(".partial")
    with partial.open("wb") as f:
        f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def load_state(truth: Path) -> SimulatorState:
    """The state persisted in ``truth``; StateError when it is missing, of another format or version, or
    does not match its checksum."""
    path = Path(truth) / STATE_FILE
    if not path.exists():
        raise StateError(
            f"{path} does not exist: generate the company with --truth {truth} before advancing it"
        )
    with path.open("rb") as f:
        try:
            header = json.loads(f.readline())
        except ValueError as error:
            raise StateError(f"{path} has no valid header") from error
        payload = f.read()
    if header.get("format") != STATE_FORMAT or header.get("version") != STATE_VERSION:
        raise StateError(
            f"{path} is {header.get('format')} version {header.get('version')}, this simulator reads "
            f"{STATE_FORMAT} version {STATE_VERSION}: generate the company again"
        )
    if len(payload) != header.get("bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise StateError(f"{path} is damaged (its checksum does not match)")
    state = pickle.loads(payload)  # a file this module wrote, checked above
    if not isinstance(state, SimulatorState):
        raise StateError(f"{path} does not hold a simulator state")
    return state
