"""The pool's fork server, started as early as a command knows it will simulate.

A sweep's pool workers are forked from a ``forkserver`` process that has imported the engine and
the batch code once (``PRELOAD``): a new interpreter and ~0.5 s of imports. Started when the first
run needs it, that came on top of the command's own start-up (importing Dagster, opening the
instance, the spec run): the first simulation of a small sweep waited ~1 s for its worker.
``start`` launches the server at once, before the command's own heavy imports, so that on two
CPUs both start-ups overlap; the pool then forks its workers from the ready server.

Only the standard library is imported here: ``simlab sweep`` calls it before anything else.
"""

import multiprocessing
from multiprocessing import forkserver

# What the fork server imports before it forks workers (batch.py's pools use the same list):
# everything a worker's first result file needs (tests/test_fixed_cost.py checks it).
PRELOAD = ["simlab_pipelines.batch"]


def start() -> None:
    """Start this process's fork server (with ``PRELOAD``) if it is not running: it inherits
    the environment as it is now, so call it once the environment is set."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
