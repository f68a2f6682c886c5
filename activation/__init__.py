"""Activation: the diff-based reverse-ETL sync of gold decisions to the CRM's destinations (PostgreSQL,
files)."""
