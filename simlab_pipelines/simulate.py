"""One partition's simulation in a pool worker, whatever its model: a built-in by name, a plug-in
found through its ``ModelRef``, or a command-line simulator run with the simulation span's
``TRACEPARENT`` and the task's wall-time limit as its default timeout.

A command that fails leaves its exit code and the last 2 KB of its stderr on the simulation span
(event ``simlab.command_failed``) besides the exception, whose message carries them too.
"""

from typing import Any

import engine
from engine import command, registry
from simlab_pipelines import telemetry


def prepare(task: Any) -> engine.Simulation:
    """``task``'s model (a ``batch.Task``'s: by name, ``ModelRef`` or command) with its parameters
    and settings checked, for any of its replications. Raises what ``engine.prepare`` raises, or
    the plug-in's error when it is broken in this worker."""
    model_ref = getattr(task, "model_ref", None)
    model = registry.resolve(model_ref) if model_ref is not None else task.model
    timeout = getattr(task, "timeout_seconds", None)
    return engine.prepare(
        model, task.params, seed=task.seed, horizon=task.horizon, warmup=task.warmup,
        common_random_numbers=task.common_random_numbers, series_interval=task.series_interval,
        # A Python model is stopped by the engine at the limit (issue 12); a command by
        # command.execution's timeout, which kills its process group.
        timeout_seconds=None if _command(task) else timeout,
    )


def _command(task: Any) -> bool:
    model_ref = getattr(task, "model_ref", None)
    return model_ref is not None and bool(model_ref.command)


def simulate(task: Any, span: telemetry.SpanInfo,
             prepared: engine.Simulation | None = None) -> engine.SimulationResult:
    """Run ``task``'s simulation (a ``batch.Task``) inside its open simulation ``span``;
    ``prepared``: ``prepare(task)`` made once for a block of its replications."""
    # Prepared here, inside the span, when not given: a plug-in broken in this worker, or a
    # parameter out of range, fails this partition only.
    simulation = prepared if prepared is not None else prepare(task)
    if not _command(task):
        return simulation.run(task.replication)
    with command.execution(traceparent=telemetry.current_traceparent(),
                           timeout=getattr(task, "timeout_seconds", None)):
        try:
            return simulation.run(task.replication)
        except command.CommandFailed as exc:
            span.span.add_event("simlab.command_failed", {
                "simlab.command.exit_code": exc.exit_code if exc.exit_code is not None else -1,
                "simlab.command.stderr_tail": exc.stderr_tail,
                "simlab.command.error": exc.message[:1024],
            })
            raise
