"""What a simulation run is asked to produce: its scale, its seed and the rates of the faults it injects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from lake.settings import FIRST_SNAPSHOT_DATE


@dataclass(frozen=True)
class FaultRates:
    """Rates of the realistic faults the simulated feeds carry (fractions, not percentages)."""

    cdc_duplicate: float = 0.01
    """Share of change events delivered a second time (a connector restart replays a block)."""
    cdc_out_of_order_file: float = 0.05
    """Share of CDC files that arrive after the file that follows them in the log."""
    click_duplicate: float = 0.01
    """Share of Segment messages delivered twice (client retry), possibly into another hour's file."""
    click_late: float = 0.02
    """Share of Segment messages sent hours to days after they happened (offline apps)."""
    click_malformed: float = 0.001
    """Share of clickstream lines that are not valid JSON (truncated writes)."""
    click_missing_field: float = 0.001
    """Share of clickstream messages missing a field the Segment spec requires."""
    skewed_device: float = 0.03
    """Share of devices whose clock is off by minutes to days."""
    shared_device: float = 0.01
    """Share of people who share a device (a family tablet) with another person."""
    duplicate_contact: float = 0.03
    """Share of CRM-registered people with a second contact whose e-mail differs only in case or spaces."""
    placeholder_email: float = 0.003
    """Share of CRM contacts recorded with a shared placeholder address instead of their own."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"fault rate {name} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class SimulationConfig:
    """The arguments of one simulation; the same config always produces the same bytes."""

    persons: int = 10_000
    days: int = 30
    seed: int = 7
    start: date = FIRST_SNAPSHOT_DATE
    history_days: int = 28
    """Days simulated before ``start`` whose state the CDC snapshot (``op: r``) captures."""
    faults: FaultRates = field(default_factory=FaultRates)
    cdc_flush_size: int = 50_000
    """Records per CDC file at most (as a Kafka Connect sink's ``flush.size``)."""
    cdc_rotate_hours: int = 6
    """A CDC file is closed at least every this many hours (``rotate.schedule.interval.ms``)."""

    def __post_init__(self) -> None:
        if self.persons < 10:
            raise ValueError(f"persons must be at least 10, got {self.persons}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.history_days < 0:
            raise ValueError(f"history_days must not be negative, got {self.history_days}")
        if 24 % self.cdc_rotate_hours:
            raise ValueError("cdc_rotate_hours must divide 24")

    @property
    def start_us(self) -> int:
        """The first simulated instant of the observed window, in microseconds since the epoch (UTC)."""
        return day_start_us(self.start)

    @property
    def history_start(self) -> date:
        """The first day of the pre-snapshot history."""
        return self.start - timedelta(days=self.history_days)

    def to_dict(self) -> dict:
        """A JSON-serialisable description of this config (for the truth manifest)."""
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND


def day_start_us(day: date) -> int:
    """Midnight UTC of ``day`` in microseconds since the epoch."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * US_PER_SECOND
