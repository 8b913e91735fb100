"""A wall-time limit on one simulation: ``run_with_time_limit(fn, seconds)``.

How: a timer thread raises an exception *in the thread running the simulation*
(``PyThreadState_SetAsyncExc``), delivered at its next Python bytecode. Chosen over SIGALRM because
it works in any thread: a pool worker runs its tasks in its main thread, but a run executed
in-process (one worker) may run them in a thread of Dagster's or of ``simlab sweep``, where no
signal can be received; and it leaves SIGALRM to the model. Chosen over a deadline the engine checks
between chunks of simulated time because that needs every model's cooperation (a plug-in's ``run``
owns its loop). The limit cannot stop a simulation stuck inside one long C call (it takes effect
when the call returns); a command-line simulator has its own limit, which kills its process group.

The exception raised inside the model is ``_Expired``, a ``BaseException``: a model's own
``except Exception`` cannot swallow it. The caller gets ``SimulationTimeout``.
"""

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SimulationTimeout(TimeoutError):
    """A simulation ran past its wall-time limit and was stopped."""


class _Expired(BaseException):
    """Raised asynchronously inside the simulation when its time is up."""


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    # None clears an exception set earlier and not yet delivered.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else None)


def run_with_time_limit(fn: Callable[[], T], seconds: float | None, what: str = "simulation") -> T:
    """``fn()``, stopped with SimulationTimeout if it runs longer than ``seconds`` (None: no limit)."""
    if seconds is None:
        return fn()
    target, lock = threading.get_ident(), threading.Lock()
    state = {"armed": True, "fired": False}

    def expire() -> None:
        with lock:
            if state["armed"]:
                state["fired"] = True
                _raise_in(target, _Expired)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    try:
        try:
            timer.start()
            return fn()
        finally:
            timer.cancel()
            with lock:  # after this, expire() does nothing
                state["armed"] = False
                if state["fired"]:
                    _raise_in(target, None)
    except _Expired:
        raise SimulationTimeout(f"{what} stopped: it ran longer than its time limit of "
                                f"{seconds:g} s (timeout_seconds)") from None


__all__ = ["SimulationTimeout", "run_with_time_limit"]
