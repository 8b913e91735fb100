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


def simulate(task: Any, span: telemetry.SpanInfo) -> engine.SimulationResult:
    """Run ``task``'s simulation (a ``batch.Task``) inside its open simulation ``span``."""
    model_ref = getattr(task, "model_ref", None)
    # Resolved here, inside the span: a plug-in broken in this worker fails this partition only.
    model = registry.resolve(model_ref) if model_ref is not None else task.model
    timeout = getattr(task, "timeout_seconds", None)
    with command.execution(traceparent=telemetry.current_traceparent(), timeout=timeout):
        try:
            return engine.simulate(
                model, task.params, replication=task.replication, seed=task.seed,
                horizon=task.horizon, warmup=task.warmup,
                common_random_numbers=task.common_random_numbers,
                series_interval=task.series_interval,
                # A Python model is stopped by the engine at the limit (issue 12); a command by
                # command.execution's timeout, which kills its process group.
                timeout_seconds=None if model_ref is not None and model_ref.command else timeout,
            )
        except command.CommandFailed as exc:
            span.span.add_event("simlab.command_failed", {
                "simlab.command.exit_code": exc.exit_code if exc.exit_code is not None else -1,
                "simlab.command.stderr_tail": exc.stderr_tail,
                "simlab.command.error": exc.message[:1024],
            })
            raise
