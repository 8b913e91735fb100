"""The engine's version: part of every result, and of the Dagster code version of the results.

Bump it whenever a model's behaviour or a metric's definition changes: results made by an older
version are then marked stale by the orchestrator.
"""

ENGINE_VERSION = "0.2.0"  # 0.2.0: percentiles and fraction_wait_over; Sample means
