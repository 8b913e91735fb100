"""A wall-time limit on one simulation: ``run_with_time_limit(fn, seconds)``.

How: a watchdog thread raises an exception *in the thread running the simulation*
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
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.25


class SimulationTimeout(TimeoutError):
    """A simulation ran past its wall-time limit and was stopped."""


class _Expired(BaseException):
    """Raised asynchronously inside the simulation when its time is up."""


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    # None clears an exception set earlier and not yet delivered.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else None)


class _Watchdog:
    """One thread per process that raises _Expired in the threads whose deadline passed.

    One long-lived thread, not a timer per simulation: starting and stopping a thread costs
    ~0.2 ms, 10 % of a small simulation; arming and disarming take a lock and a dict entry. It
    looks every POLL_SECONDS at most, so a limit is met within that. Only ``threading.Lock`` (whose
    ``with`` cannot be cut between acquiring and the block) is used while a limit is armed: an
    _Expired arriving inside Python-level locking code could leave a lock held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        if self._thread is None or not self._thread.is_alive():  # before anything is armed
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._watch, daemon=True,
                                                    name="simlab-time-limit")
                    self._thread.start()
        deadline = time.monotonic() + seconds
        with self._lock:
            token = next(self._tokens)
            self._armed[token] = (deadline, threading.get_ident())
        return token

    def disarm(self, token: int) -> bool:
        """Whether the limit fired; an exception it set and not yet delivered is cleared."""
        with self._lock:
            self._armed.pop(token, None)
            if token not in self._fired:
                return False
            self._fired.discard(token)
            _raise_in(threading.get_ident(), None)
            return True

    def _watch(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for token, (deadline, thread_id) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _raise_in(thread_id, _Expired)
                earliest = min((d for d, _ in self._armed.values()), default=now + POLL_SECONDS)
            time.sleep(min(POLL_SECONDS, max(0.001, earliest - now)))


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    # A forked child has no watchdog thread, and its lock may have been held at the fork.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


def run_with_time_limit(fn: Callable[[], T], seconds: float | None, what: str = "simulation") -> T:
    """``fn()``, stopped with SimulationTimeout if it runs longer than ``seconds`` (None: no limit)."""
    if seconds is None:
        return fn()
    watchdog = _WATCHDOG
    try:
        token = watchdog.arm(seconds)
        try:
            return fn()
        finally:
            watchdog.disarm(token)  # after this, nothing is raised in this thread
    except _Expired:
        # worded like a command simulator's timeout (engine.command), so the two read alike
        raise SimulationTimeout(f"{what} timed out after {seconds:g} s (timeout_seconds) and "
                                "was stopped") from None


__all__ = ["SimulationTimeout", "run_with_time_limit"]
