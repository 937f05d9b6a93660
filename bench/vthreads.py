"""Blocking code on the engine's virtual clock: real threads, one running at a time.

Why: the library's runners (:class:`~kisi_gateway.pipeline.forwarding.Forwarder`,
:class:`~kisi_gateway.pipeline.retrying.RetryWorker`) are plain blocking code that waits by
calling ``clock.sleep``. To measure *them* rather than a re-statement of them, each api_call
and each retry_worker invocation runs in a thread of its own, and a :class:`VirtualClock`
turns ``sleep`` into a wait on the engine. Only one thread runs at any moment — the engine's
or one virtual thread — and control passes explicitly, so a run is as deterministic as the
generator processes beside it:

- the engine resumes a virtual thread (as it resumes a generator, through
  :class:`~bench.engine.Resumable`) and waits until that thread *parks* on a command
  (``sleep``, a send to the virtual Kisi) or ends;
- the command is begun by the engine, never by the parking thread, and its completion is an
  event on the heap, so a thread is never resumed from inside itself;
- an exception in a thread is raised again in the engine, ending the run;
- :meth:`VirtualThreads.close` releases every thread still parked when the run stops (at its
  horizon, or on an error): each is unwound by :class:`Released` and joined.

Bounded: a thread that neither parks nor ends within ``switch_timeout_s`` of real time (it
blocked on something real) stops the run with :class:`~bench.engine.WallClockLimitError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.engine import Command, Engine, Process, Resume, Sleep, WallClockLimitError

T = TypeVar("T")
SWITCH_TIMEOUT_S = 60.0  # real seconds one thread may run between two parks
JOIN_TIMEOUT_S = 10.0


class Released(BaseException):
    """Raised in a parked thread when the run ends, to unwind it.

    A ``BaseException``, so that the library's ``except Exception`` handlers let it through.
    """


class _Release:
    """What a released thread finds in its inbox."""


_RELEASE = _Release()


class VirtualThread:
    """One blocking target, stepped by the engine. Made by :meth:`VirtualThreads.start`."""

    def __init__(
        self, runtime: VirtualThreads, target: Callable[[], Any], context: object, name: str
    ) -> None:
        self.context = context
        self.name = name
        self._runtime = runtime
        self._target = target
        # Two locks as binary semaphores: each side releases the other's and waits on its own.
        self._to_thread = threading.Lock()
        self._to_thread.acquire()
        self._to_engine = threading.Lock()
        self._to_engine.acquire()
        self._inbox: object = None
        self._outbox: tuple[str, Any] = ("new", None)
        self._releasing = False
        self.started = False
        self.finished = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    # -- the engine's side ------------------------------------------------------------------

    def send(self, value: object, /) -> Command:
        """Run the thread until it parks (returns the command) or ends (``StopIteration``)."""
        kind, payload = self._switch(value)
        if kind == "park":
            command: Command = payload
            return command
        if kind == "error":
            raise payload
        if kind == "released":
            raise RuntimeError(f"{self.name} was resumed after it was released")
        raise StopIteration(payload)

    def release(self) -> BaseException | None:
        """Unwind a parked thread; the error it raised while unwinding, if any."""
        if self.finished or not self.started:
            self._runtime.forget(self)
            return None
        kind, payload = self._switch(_RELEASE)
        if kind == "park":  # it swallowed Released and waited again: not allowed
            return RuntimeError(f"{self.name} parked again after it was released")
        return payload if kind == "error" else None

    def _switch(self, value: object) -> tuple[str, Any]:
        runtime = self._runtime
        if self.finished:
            raise RuntimeError(f"{self.name} has already ended")
        if runtime.current is not None:
            raise RuntimeError(f"{self.name} resumed from inside {runtime.current.name}")
        self._inbox = value
        runtime.current = self
        if self.started:
            self._to_thread.release()
        else:
            self.started = True
            self._thread.start()
        handed_back = self._to_engine.acquire(timeout=runtime.switch_timeout_s)
        runtime.current = None
        if not handed_back:
            # It holds its lock and may never park: leave it alone (a daemon thread).
            self.finished = True
            runtime.forget(self)
            raise WallClockLimitError(
                f"{self.name} ran {runtime.switch_timeout_s} s of real time without parking"
            )
        kind, payload = self._outbox
        if kind != "park":
            self.finished = True
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            runtime.forget(self)
        return kind, payload

    # -- the thread's side ------------------------------------------------------------------

    def is_calling(self) -> bool:
        """Is the caller this virtual thread's own thread?"""
        return threading.current_thread() is self._thread

    def park(self, command: Command) -> object:
        """Hand ``command`` to the engine and wait for its result (called by this thread)."""
        if self._releasing:
            raise Released
        self._outbox = ("park", command)
        self._to_engine.release()
        self._to_thread.acquire()
        if self._inbox is _RELEASE:
            self._releasing = True
            raise Released
        return self._inbox

    def _main(self) -> None:
        try:
            if self._inbox is _RELEASE:
                raise Released
            self._outbox = ("done", self._target())
        except Released:
            self._outbox = ("released", None)
        except BaseException as exc:  # anything: raised again in the engine
            self._outbox = ("error", exc)
        finally:
            self._to_engine.release()


@dataclass(frozen=True, slots=True)
class _Await:
    """Run a generator process in the engine; resume with its return value."""

    process: Process[Any]

    def begin(self, engine: Engine, resume: Resume) -> None:
        engine.spawn(self.process, resume)


@dataclass(frozen=True, slots=True)
class InThread:
    """A command for a generator process: run ``target`` in a new virtual thread, resume with
    what it returns. ``context`` is what the thread serves (see :attr:`VirtualThreads.context`).
    """

    runtime: VirtualThreads
    target: Callable[[], Any]
    context: object = None

    def begin(self, engine: Engine, resume: Resume) -> None:
        self.runtime.start(self.target, on_done=resume, context=self.context)


class VirtualThreads:
    """The virtual threads of one engine run; close it (or use ``with``) to release them."""

    def __init__(self, engine: Engine, *, switch_timeout_s: float = SWITCH_TIMEOUT_S) -> None:
        self.engine = engine
        self.switch_timeout_s = switch_timeout_s
        self.current: VirtualThread | None = None  # the thread running now, if any
        self._live: dict[VirtualThread, None] = {}  # started and not ended, in start order
        self._names = 0

    def __enter__(self) -> VirtualThreads:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.close()
        except BaseException:
            if exc_type is None:  # else the run's own error is the one to see
                raise

    def start(
        self,
        target: Callable[[], Any],
        on_done: Callable[[Any], None] | None = None,
        context: object = None,
    ) -> VirtualThread:
        """Run ``target`` in a new virtual thread, now, until it first parks (engine side)."""
        if self.current is not None:
            raise RuntimeError("a virtual thread cannot start another one; yield InThread")
        self._names += 1
        thread = VirtualThread(self, target, context, f"vthread-{self._names}")
        self._live[thread] = None
        self.engine.spawn(thread, on_done)
        return thread

    def forget(self, thread: VirtualThread) -> None:
        self._live.pop(thread, None)

    @property
    def live(self) -> int:
        """Threads started and not yet ended."""
        return len(self._live)

    @property
    def context(self) -> object:
        """What the running virtual thread serves (given when it was started)."""
        return self._running().context

    def park(self, command: Command) -> object:
        """Wait for ``command`` in the engine; its result (called by a virtual thread)."""
        return self._running().park(command)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass; like ``time.sleep``, nothing for ``<= 0``."""
        if seconds > 0:
            self.park(Sleep(seconds))

    def wait(self, process: Process[T]) -> T:
        """Run a generator process in the engine (a send to the virtual Kisi) and wait for it."""
        result: T = self.park(_Await(process))  # type: ignore[assignment]
        return result

    def close(self) -> None:
        """Release every thread still parked; raises the first error one raised unwinding."""
        errors = [error for thread in list(self._live)
                  if (error := thread.release()) is not None]
        self._live.clear()
        if errors:
            raise errors[0]

    def _running(self) -> VirtualThread:
        thread = self.current
        if thread is None or not thread.is_calling():
            raise RuntimeError("not called from the running virtual thread")
        return thread


@dataclass(frozen=True, slots=True)
class VirtualClock:
    """The library's :class:`~kisi_gateway.stores.ports.Clock` on the engine's time: ``sleep``
    parks the calling virtual thread until the engine reaches the wake-up time."""

    threads: VirtualThreads

    def now(self) -> float:
        return self.threads.engine.now

    def sleep(self, seconds: float) -> None:
        self.threads.sleep(seconds)
