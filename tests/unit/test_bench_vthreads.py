"""Virtual threads on the benchmark's engine: blocking code in virtual time, one thread at a
time, deterministic for a seed; errors surface in the engine and no thread outlives a run."""

from __future__ import annotations

import os
import random
import threading
from functools import partial

import pytest

from bench.engine import Engine, Process, Resume, Sleep, WallClockLimitError
from bench.vthreads import InThread, VirtualClock, VirtualThreads


def vthreads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vthread-")]


def interleaving(seed: int) -> list[tuple[float, str, float]]:
    """Five threads sleeping seeded random amounts; who woke when, and what it drew."""
    engine = Engine()
    rng = random.Random(seed)
    log: list[tuple[float, str, float]] = []
    with VirtualThreads(engine) as threads:
        clock = VirtualClock(threads)

        def sleeper(name: str) -> None:
            for _ in range(20):
                draw = rng.random()
                clock.sleep(draw)
                log.append((clock.now(), name, draw))

        for name in "abcde":
            threads.start(partial(sleeper, name))
        engine.run(until=1_000.0, max_events=10_000)
    return log


def test_the_same_seed_interleaves_the_threads_the_same_way() -> None:
    first = interleaving(7)
    assert first == interleaving(7)
    assert first != interleaving(8)
    assert len(first) == 100
    assert [at for at, _, _ in first] == sorted(at for at, _, _ in first)  # in virtual time


def test_only_one_thread_runs_at_a_time() -> None:
    engine = Engine()
    inside = 0
    overlaps = 0
    with VirtualThreads(engine) as threads:

        def worker() -> None:
            nonlocal inside, overlaps
            for _ in range(50):
                inside += 1
                os.sched_yield()  # let any other runnable OS thread in: none may be
                overlaps += inside > 1
                inside -= 1
                threads.sleep(0.5)  # woken at the same instants as the others

        for _ in range(4):
            threads.start(worker)
        engine.run(until=100.0, max_events=10_000)
    assert overlaps == 0
    assert engine.events == 200


def test_a_thread_waits_for_a_generator_process_in_the_engine() -> None:
    engine = Engine()
    results: list[tuple[float, str]] = []

    def round_trip() -> Process[str]:
        yield Sleep(0.25)
        return "pong"

    with VirtualThreads(engine) as threads:

        def ping() -> None:
            answer = threads.wait(round_trip())
            results.append((engine.now, answer))

        threads.start(ping)
        engine.run(until=10.0, max_events=100)
    assert results == [(0.25, "pong")]


def test_a_generator_process_waits_for_a_thread_and_gets_its_result() -> None:
    engine = Engine()
    got: list[object] = []
    with VirtualThreads(engine) as threads:

        def blocking() -> str:
            threads.sleep(2.0)
            return "done"

        def caller() -> Process[None]:
            got.append((yield InThread(threads, blocking)))
            got.append(engine.now)

        engine.spawn(caller())
        engine.run(until=10.0, max_events=100)
    assert got == ["done", 2.0]


def test_a_thread_that_ends_without_waiting_resumes_its_caller_from_the_heap() -> None:
    """No re-entry: the caller is resumed by an event at the same instant, not from inside
    the command that started the thread."""
    engine = Engine()
    steps: list[str] = []
    with VirtualThreads(engine) as threads:

        def caller() -> Process[None]:
            steps.append("before")
            value = yield InThread(threads, lambda: "at once")
            steps.append(f"resumed with {value}")

        engine.spawn(caller())
        assert steps == ["before"]  # not resumed within spawn
        engine.run(until=1.0, max_events=10)
    assert steps == ["before", "resumed with at once"]
    assert engine.events == 1


class _Immediate:
    """A command that (against the protocol) completes while it begins."""

    def begin(self, engine: Engine, resume: Resume) -> None:
        resume("now")


def test_a_command_that_completes_at_once_resumes_the_thread_from_the_heap() -> None:
    engine = Engine()
    seen: list[object] = []
    with VirtualThreads(engine) as threads:
        threads.start(lambda: seen.append(threads.park(_Immediate())))
        assert seen == []  # parked, not resumed inside its own park
        engine.run(until=1.0, max_events=10)
    assert seen == ["now"]


def test_an_error_in_a_thread_surfaces_in_the_engine_and_the_others_are_released() -> None:
    engine = Engine()
    unwound: list[str] = []

    def patient() -> None:
        try:
            threads.sleep(1_000.0)
        finally:
            unwound.append("patient")

    def failing() -> None:
        threads.sleep(1.0)
        raise ValueError("boom")

    threads = VirtualThreads(engine)
    threads.start(patient)
    threads.start(failing)
    with pytest.raises(ValueError, match="boom"):
        engine.run(until=10.0, max_events=100)
    assert threads.live == 1  # the patient one, parked
    threads.close()
    assert unwound == ["patient"]
    assert threads.live == 0
    assert vthreads_alive() == []


def test_threads_parked_at_the_horizon_are_released_and_joined() -> None:
    engine = Engine()
    unwound: list[int] = []
    before = threading.active_count()
    threads = VirtualThreads(engine)

    def long_sleeper(index: int) -> None:
        try:
            threads.sleep(3_600.0)
        finally:
            unwound.append(index)

    for index in range(10):
        threads.start(partial(long_sleeper, index))
    engine.run(until=60.0, max_events=100)
    assert threads.live == 10
    threads.close()
    assert sorted(unwound) == list(range(10))
    assert threads.live == 0
    assert vthreads_alive() == []
    assert threading.active_count() == before


def test_sleeping_outside_a_virtual_thread_is_refused() -> None:
    threads = VirtualThreads(Engine())
    with pytest.raises(RuntimeError, match="virtual thread"):
        VirtualClock(threads).sleep(1.0)


def test_a_thread_that_blocks_for_real_stops_the_run() -> None:
    engine = Engine()
    gate = threading.Event()
    threads = VirtualThreads(engine, switch_timeout_s=0.1)
    with pytest.raises(WallClockLimitError, match="without parking"):
        threads.start(lambda: gate.wait(30))
    gate.set()  # let it end, so that nothing outlives the test
    threads.close()
    for thread in threading.enumerate():
        if thread.name.startswith("vthread-"):
            thread.join(5.0)
    assert vthreads_alive() == []


def test_the_engine_stops_a_run_that_takes_too_long_in_real_time() -> None:
    engine = Engine()

    def again() -> None:
        engine.after(1.0, again)

    engine.after(0.0, again)
    with pytest.raises(WallClockLimitError):
        engine.run(until=1e12, max_events=10**9, max_wall_s=0.0)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_sleeping_nothing_does_not_wait(seconds: float) -> None:
    """Like ``time.sleep``, and the library's ``SystemClock``: no event, no hand-over."""
    engine = Engine()
    done: list[float] = []
    with VirtualThreads(engine) as threads:

        def run() -> None:
            threads.sleep(seconds)
            done.append(engine.now)

        threads.start(run)
        assert done == [0.0]  # ran to the end inside start
    assert engine.events == 0
