"""Partitions at scale (issue 23): dynamic keys added in chunks that any SQLite takes, so that a
sequential round of 40,000 keys works on a SQLite built with the upstream default limit of 32,766
SQL variables (the SQLite of this Python allows 250,000: the limit is lowered on every connection
Dagster opens, as such a build would have it), and on PostgreSQL."""

import sqlite3

import dagster as dg
import pytest
import sqlalchemy as sa
from test_postgres_instance import pg_database  # noqa: F401  (a fresh database on the server)

from simlab_pipelines import partitions, plan, sensors
from simlab_pipelines.experiments import parse_experiment

UPSTREAM_DEFAULT_VARIABLES = 32_766
ROUND = {"name": "wide", "model": "linear", "seed": 3, "replications": 100,
         "factors": {"x1": [float(i) for i in range(400)]},
         "precision": {"metric": "y", "relative_half_width": 0.1, "max_replications": 200}}


@pytest.fixture
def upstream_sqlite():
    """Every SQLite connection opened meanwhile has the upstream default variable limit."""
    def cap(connection, _record) -> None:
        if isinstance(connection, sqlite3.Connection):
            connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, UPSTREAM_DEFAULT_VARIABLES)

    sa.event.listen(sa.engine.Engine, "connect", cap)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "connect", cap)


def _keys(instance: dg.DagsterInstance, spec) -> list[str]:
    return list(instance.get_dynamic_partitions(partitions.dynamic_name(spec.name)))


def test_a_round_of_40000_keys_is_added_in_chunks(upstream_sqlite, monkeypatch):
    spec = parse_experiment(ROUND)
    wanted = plan.wanted_partitions(spec, {})
    assert len(wanted) == 40_000
    with dg.instance_for_test() as instance:
        # The limit holds: the same round in one call fails as it did before the chunks.
        monkeypatch.setattr(partitions, "ADD_CHUNK", len(wanted))
        with pytest.raises(sa.exc.OperationalError, match="too many SQL variables"):
            sensors.add_partitions(instance, spec, {})
        assert _keys(instance, spec) == []
        monkeypatch.undo()
        # simlab sweep's path: every key, in the round's order.
        order = sensors.add_partitions(instance, spec, {})
        assert order == wanted and _keys(instance, spec) == wanted


def test_a_sensor_asks_for_at_most_25000_keys_a_request(upstream_sqlite):
    spec = parse_experiment(ROUND)
    with dg.instance_for_test() as instance:
        partitions.add_keys(instance, spec.name, plan.wanted_partitions(spec, {})[:100])
        requests, order = sensors.partition_requests(instance, spec, {})
        assert [len(r.partition_keys) for r in requests] == [25_000, 14_900]
        for request in requests:  # as the sensor daemon applies them: one call a request
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        assert _keys(instance, spec) == order == plan.wanted_partitions(spec, {})


def test_the_40000_key_round_on_postgresql(tmp_path, pg_database, monkeypatch):  # noqa: F811
    """The same round on a PostgreSQL instance (the production storage, the example instance
    file as it is, a fresh database): every key, in order, added in chunks."""
    from test_postgres_instance import _postgres_home

    for var, value in _postgres_home(tmp_path / "home", pg_database).items():
        monkeypatch.setenv(var, value)
    spec = parse_experiment(ROUND)
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        order = sensors.add_partitions(instance, spec, {})
        assert order == plan.wanted_partitions(spec, {}) and _keys(instance, spec) == order
