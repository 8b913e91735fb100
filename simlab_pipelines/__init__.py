"""simlab pipelines: Dagster definitions for simulation experiments."""
