"""The one resource the assets share: where results and the DuckDB file live, and the pool size."""

import dagster as dg

from simlab_pipelines import settings
from simlab_pipelines.storage import ResultStore


class SimlabStorage(dg.ConfigurableResource):
    """Results location (local path or s3://), DuckDB file, and pool workers per run (0 = auto)."""

    results_uri: str
    duckdb_path: str
    workers: int = 0

    def store(self) -> ResultStore:
        return ResultStore(self.results_uri)

    def pool_size(self, tags: dict[str, str] | None = None) -> int:
        """Workers for a run: its ``simlab/workers`` tag, else this resource's, else the CPUs."""
        tagged = (tags or {}).get("simlab/workers")
        if tagged:
            try:
                value = int(tagged)
            except ValueError:
                value = 0
            if value < 1:
                raise ValueError(f"run tag simlab/workers={tagged!r} must be a positive integer")
            return value
        return self.workers if self.workers > 0 else settings.workers()


def default_storage() -> SimlabStorage:
    return SimlabStorage(results_uri=settings.results_uri(), duckdb_path=str(settings.duckdb_path()))
