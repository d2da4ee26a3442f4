"""Open-loop arrivals shared by a process's users: constant, Poisson, gamma, on/off or a trace's timestamps.

The schedule is the run's whole arrival sequence, drawn from the scenario's seed alone, so every worker
process computes the same one and takes the arrivals whose index modulo the worker count is its own
(`arrival_times` and `traces.schedule` are pure functions of their inputs). An arrival that finds no
free user is dropped and counted, never queued into a later burst.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.queue import Empty, Queue

from .scenario import DEFAULT_MODELS, Scenario
from .traces import LEAD_IN_S, TraceArrival, schedule

#: How far a zero-rate stretch is stepped through while looking for the next arrival.
_IDLE_STEP_S = 0.1


def arrival_times(process: str, rate_at: Callable[[float], float], rng: random.Random, *,
                  burstiness: float = 1.0, on_s: float = 0.0, off_s: float = 0.0,
                  until: float = math.inf) -> Iterator[float]:
    """Arrival times (seconds from the start) of a process whose total rate at time t is `rate_at(t)`.

    constant: gaps of 1/rate. poisson: exponential gaps. gamma: gamma gaps of shape k = `burstiness`
    and mean 1/rate, so their coefficient of variation is 1/sqrt(k) (k = 1 is Poisson, k < 1 burstier).
    onoff: Poisson at `rate` during on periods of `on_s`, nothing during the `off_s` between them
    (the run starts with an on period). Ends at `until`."""
    t = 0.0
    period = on_s + off_s
    while True:
        rate = rate_at(t)
        if rate <= 0:
            t += _IDLE_STEP_S
            if t >= until:
                return
            continue
        if process == "constant":
            t += 1.0 / rate
        elif process == "gamma":
            t += rng.gammavariate(burstiness, 1.0 / (burstiness * rate))
        elif process == "onoff":
            t = _advance_on_time(t, rng.expovariate(rate), on_s, period)
        else:
            t += rng.expovariate(rate)
        if t >= until:
            return
        yield t


def _advance_on_time(t: float, gap: float, on_s: float, period: float) -> float:
    """The time `gap` seconds of on-time after t, skipping off periods."""
    k = math.floor(t / period)
    phase = t - k * period
    if phase >= on_s:  # in an off period: on-time resumes at the next period
        k, phase = k + 1, 0.0
    while gap > on_s - phase:
        gap -= on_s - phase
        k, phase = k + 1, 0.0
    return k * period + phase + gap


def is_mine(index: int, worker: int, workers: int) -> bool:
    """Whether the schedule's arrival `index` belongs to this worker."""
    return index % workers == worker % workers


class Arrivals:
    """Replays this process's share of the scenario's arrivals and hands each one to a free user."""

    def __init__(self, scenario: Scenario, seed: int, worker: int, workers: int = 1) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(f"{seed}:arrivals")  # the same on every worker: one shared sequence
        self.worker = worker
        self.workers = max(1, workers)
        self.tickets: Queue = Queue()
        self.idle = 0
        self.offered = 0
        self.dropped = 0
        self.started_at: float | None = None
        self._greenlet: gevent.Greenlet | None = None
        self.stopped = False
        self.trace: list[TraceArrival] | None = None
        if scenario.trace is not None and scenario.trace_data is not None:
            self.trace = schedule(scenario.trace_data, scenario.trace, seed, scenario.mix, DEFAULT_MODELS)

    def set_workers(self, workers: int) -> None:
        """Re-split the arrivals over a new number of worker processes (from the next arrival on)."""
        self.workers = max(1, workers)

    def stage_at(self, elapsed: float) -> tuple[int | None, float]:
        """The stage index and total rate in force `elapsed` seconds into the run."""
        sc = self.scenario
        if not sc.stages:
            return None, sc.rate
        acc = 0.0
        for i, st in enumerate(sc.stages):
            acc += st.duration_s
            if elapsed < acc:
                return i, st.rate if st.rate is not None else sc.rate
        return len(sc.stages) - 1, 0.0

    def times(self) -> Iterator[float]:
        """The run's whole arrival sequence (all workers'), seconds from the start."""
        sc = self.scenario
        return arrival_times(sc.arrivals, lambda t: self.stage_at(t)[1], self.rng, burstiness=sc.burstiness,
                             on_s=sc.on_s, off_s=sc.off_s,
                             until=sc.total_duration_s + 1 if sc.stages else math.inf)  # else until stop()

    def start(self) -> None:
        """Start the scheduling greenlet."""
        if self._greenlet is None:
            self.started_at = time.time()
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop scheduling."""
        self.stopped = True
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _plan(self) -> Iterator[tuple[float, int | None, TraceArrival | None]]:
        if self.trace is not None:
            return ((LEAD_IN_S + a.t, None, a) for a in self.trace)
        return ((t, self.stage_at(t)[0], None) for t in self.times())

    def _run(self) -> None:
        assert self.started_at is not None
        start_wall = self.started_at
        start = time.perf_counter()
        for i, (t, stage, item) in enumerate(self._plan()):
            if self.stopped:
                return
            if not is_mine(i, self.worker, self.workers):
                continue
            delay = start + t - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            self.offered += 1
            if self.idle > self.tickets.qsize():
                self.tickets.put((start_wall + t, stage, item))
            else:
                self.dropped += 1  # no free user: counted, never queued into a later burst

    def wait(self, timeout: float | None = None) -> tuple[float, int | None, Any] | None:
        """Block a user until an arrival is handed to it: (scheduled epoch, stage index, trace arrival or None)."""
        self.idle += 1
        try:
            return self.tickets.get(timeout=timeout)
        except Empty:
            return None
        finally:
            self.idle -= 1
