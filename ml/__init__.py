"""Models and decisions: uplift training tracked in MLflow, off-policy evaluation, the model registry, batch
scoring and the next-best-action policy. Plain functions; Dagster wires them in ``orchestration/``."""
