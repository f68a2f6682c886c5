"""Dagster code location of the engagement lakehouse: assets, checks, jobs, schedules and sensors only.

The business logic lives in the other packages (``simulator``, ``lake``, ...); this package wires them.
"""
