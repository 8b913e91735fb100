"""Benchmark: how much a PostgreSQL Dagster instance grows per partition (issue 23's Kubernetes
sizing), measured on a real server.

For each (configurations x replications, block) case, a fresh database on the server
(``SIMLAB_TEST_POSTGRES_URL``, default the local trust-auth server as user postgres; created
through its ``test`` or ``postgres`` database and dropped afterwards), a DAGSTER_HOME holding
``examples/dagster_home_postgres/dagster.yaml`` as it is, and ``simlab sweep`` of the ``linear``
model; then the database's size (``pg_database_size``, after ``VACUUM ANALYZE``), its largest
tables and its rows: per partition and per simulation, less the empty instance's size (the same
sweep of a 2 x 2 experiment first). Blocks show what is per partition (events, tags, rows of
``event_logs`` and ``asset_event_tags``) and what is per simulation (nothing: the instance holds
no row per replication).

    .venv/bin/python benchmarks/scale_postgres.py --cases 20x100:1 20x500:10
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import yaml
from sweep_throughput import command_environment

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVER_URL = os.environ.get("SIMLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
EXAMPLE = ROOT / "examples" / "dagster_home_postgres" / "dagster.yaml"


def _admin():
    for database in ("test", "postgres"):
        try:
            connection = psycopg2.connect(f"{SERVER_URL}/{database}", connect_timeout=3)
            connection.autocommit = True
            return connection
        except psycopg2.OperationalError:
            continue
    raise SystemExit(f"no PostgreSQL server at {SERVER_URL}")


def _size(database: str) -> dict:
    connection = psycopg2.connect(f"{SERVER_URL}/{database}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("SELECT pg_database_size(current_database())")
        total = cursor.fetchone()[0]
        cursor.execute("SELECT relname, pg_total_relation_size(relid), n_live_tup "
                       "FROM pg_stat_user_tables ORDER BY 2 DESC")
        tables = {name: {"bytes": size, "rows": rows} for name, size, rows in cursor.fetchall()}
    connection.close()
    return {"bytes": total, "tables": tables}


def one_case(configs: int, replications: int, block: int, workers: int) -> dict:
    admin = _admin()
    database = f"simlab_scale_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    scratch = Path(tempfile.mkdtemp(prefix="simlab-scale-pg-"))
    try:
        home = scratch / "home"
        home.mkdir()
        shutil.copy(EXAMPLE, home / "dagster.yaml")
        url = urlsplit(SERVER_URL)
        env = {k: v for k, v in command_environment().items() if not k.startswith("SIMLAB_")}
        env.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(scratch / "data"),
                    "DAGSTER_PG_HOST": url.hostname or "127.0.0.1",
                    "DAGSTER_PG_PORT": str(url.port or 5432), "DAGSTER_PG_DB": database,
                    "DAGSTER_PG_USER": url.username or "postgres",
                    "DAGSTER_PG_PASSWORD": url.password or "unused"})

        def sweep(name: str, c: int, r: int, b: int) -> None:
            path = scratch / f"{name}.yaml"
            path.write_text(yaml.safe_dump({
                "name": name, "model": "linear", "seed": 5, "replications": r,
                "parameters": {"noise_sd": 1.0}, "replications_per_partition": b,
                "factors": {"x1": [float(i) for i in range(c)]},
                "baseline": {"x1": 0.0}}))
            subprocess.run([str(BIN / "simlab"), "sweep", str(path), "--workers", str(workers)],
                           env=env, check=True, capture_output=True)

        sweep("empty", 2, 2, 1)
        before = _size(database)
        sweep("measured", configs, replications, block)
        after = _size(database)
        partitions = configs * -(-replications // block)
        grown = after["bytes"] - before["bytes"]
        tables = {name: {"bytes": t["bytes"] - before["tables"].get(name, {}).get("bytes", 0),
                         "rows": t["rows"] - before["tables"].get(name, {}).get("rows", 0)}
                  for name, t in after["tables"].items()}
        top = dict(sorted(tables.items(), key=lambda kv: -kv[1]["bytes"])[:6])
        return {"configs": configs, "replications": replications, "block": block,
                "partitions": partitions, "simulations": configs * replications,
                "bytes": grown, "bytes_per_partition": grown / partitions,
                "bytes_per_simulation": grown / (configs * replications), "tables": top}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--cases", nargs="+", default=["20x100:1", "20x500:10"],
                        help="CONFIGSxREPLICATIONS:BLOCK")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = []
    for case in args.cases:
        size, block = case.split(":")
        configs, replications = (int(x) for x in size.split("x"))
        found = one_case(configs, replications, int(block), args.workers)
        print(json.dumps(found, indent=1), flush=True)
        results.append(found)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "scale_postgres.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
