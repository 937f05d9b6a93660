"""A discrete-event engine in virtual time: a heap of timed actions, and processes.

Why: the benchmark compares retry strategies over minutes and hours of traffic, which must take
seconds of CPU and come out the same on every run. Nothing here sleeps or reads the time of
day (the wall clock only bounds a run). A *process* is a generator that yields commands
(:class:`Sleep`, or a send to the virtual Kisi) and is resumed with the command's result when
it completes, so strategy code reads like the blocking code it models::

    def caller() -> Process[None]:
        reply = yield from kisi.request(call)
        yield Sleep(1.0)

Blocking code that cannot be written as a generator (the library's own runners) runs in a
virtual thread (:mod:`bench.vthreads`), which the engine steps through the same
:class:`Resumable` interface.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Resume = Callable[[object], None]
WALL_CHECK_EVERY = 1024  # events between two looks at the wall clock


class Command(Protocol):
    """Something a process waits for; it calls ``resume`` with the result when done."""

    def begin(self, engine: Engine, resume: Resume) -> None: ...


Process = Generator[Command, object, T]


class Resumable(Protocol):
    """What the engine steps: ``send`` runs the process until its next command, and raises
    ``StopIteration`` (its value: the result) when it is done. Generators are resumable."""

    def send(self, value: object, /) -> Command: ...


class EventLimitError(RuntimeError):
    """A run needed more events than allowed: a model bug, not a result."""


class WallClockLimitError(RuntimeError):
    """A run took longer in real time than allowed: a hang or a model bug, not a result."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Resume after ``seconds`` of virtual time."""

    seconds: float

    def begin(self, engine: Engine, resume: Resume) -> None:
        engine.after(self.seconds, lambda: resume(None))


class Engine:
    """The virtual clock and its event heap; ties break in scheduling order (deterministic)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``when`` (never in the past)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._order), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + max(0.0, delay), action)

    def spawn(self, process: Resumable, on_done: Callable[[Any], None] | None = None) -> None:
        """Start ``process`` now; ``on_done`` gets its return value when it finishes."""
        self._step(process, None, on_done)

    def run(self, *, until: float, max_events: int, max_wall_s: float | None = None) -> None:
        """Process events in time order up to ``until``; bounded by ``max_events`` and, when
        given, by ``max_wall_s`` seconds of real time."""
        wall_limit = None if max_wall_s is None else time.monotonic() + max_wall_s
        while self._heap and self._heap[0][0] <= until:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
            self.events += 1
            if self.events > max_events:
                raise EventLimitError(f"more than {max_events} events by t={self.now:.1f}s")
            if (wall_limit is not None and self.events % WALL_CHECK_EVERY == 0
                    and time.monotonic() > wall_limit):
                raise WallClockLimitError(
                    f"more than {max_wall_s} s of real time by t={self.now:.1f}s")

    @property
    def idle(self) -> bool:
        """Nothing left to happen."""
        return not self._heap

    def _step(
        self, process: Resumable, value: object, on_done: Callable[[Any], None] | None
    ) -> None:
        try:
            command = process.send(value)
        except StopIteration as stop:
            if on_done is not None:
                on_done(stop.value)
            return
        beginning = True

        def resume(result: object) -> None:
            # A command that completes while it is still beginning (a thread that ends before
            # it ever waits) is resumed from the heap, at the same instant: never re-entered.
            if beginning:
                self.at(self.now, lambda: self._step(process, result, on_done))
            else:
                self._step(process, result, on_done)

        command.begin(self, resume)
        beginning = False
