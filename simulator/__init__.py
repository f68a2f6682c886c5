"""The simulated company: a deterministic, vectorised generator of an online retailer's raw data feeds.

It writes what real sinks write (Debezium change events per topic, Segment messages per received hour) into a
landing folder, and its ground truth (who every identifier really is, how every person responds to every
action) into a separate folder, with the state to continue from. See :func:`simulator.generate.generate`;
:func:`simulator.advance.advance` continues the company day by day, executing the recommendations its CRM
received (the closed loop).
"""

from simulator.config import FaultRates, SimulationConfig
from simulator.generate import GenerationReport, generate

__all__ = ["FaultRates", "GenerationReport", "SimulationConfig", "generate"]
