"""simlab pipelines: Dagster definitions for simulation experiments."""

import os

# A batched run materialises many partitions in one step; with this set, Dagster hands their events
# to the event log as batches, which both simlab's SQLite event log (simlab_pipelines.instance) and
# dagster-postgres write in one transaction instead of one per event.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
