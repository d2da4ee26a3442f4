"""Open-loop arrivals shared by a process's users: constant, Poisson, gamma, on/off or a trace's timestamps.

The schedule is the run's whole arrival sequence, drawn from the scenario's seed alone, so every worker
process computes the same one and takes the arrivals whose index modulo the worker count is its rank
(`arrival_times` and `traces.schedule` are pure functions of their inputs). In a distributed run the master
gives the live workers dense ranks 0..n-1 and announces each re-split with the schedule time it takes effect
from, so every worker switches at the same arrival. An arrival that finds no free user is dropped and counted,
never queued into a later burst.
"""

from __future__ import annotations

import heapq
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


def _labelled(times: Iterator[float], label: str,
              stage_at: Callable[[float], tuple[int | None, float]]) -> Iterator[tuple[float, int | None, None, str]]:
    """A tenant's own arrival times as plan entries (time, the stage in force, no trace arrival, its label)."""
    for t in times:
        yield t, stage_at(t)[0], None, label


def is_mine(index: int, rank: int, workers: int) -> bool:
    """Whether the schedule's arrival `index` belongs to the worker of this rank."""
    return index % workers == rank % workers


class Split:
    """Which ranks own which arrivals over the schedule's time: (from_t, rank, workers) entries, in order."""

    def __init__(self, rank: int = 0, workers: int = 1) -> None:
        self.entries: list[tuple[float, int, int]] = [(0.0, rank, max(1, workers))]

    def set(self, rank: int, workers: int, from_t: float) -> None:
        """From schedule time `from_t` on, this process has `rank` of `workers` (a rank < 0: none)."""
        self.entries = [e for e in self.entries if e[0] < from_t] + [(from_t, rank, max(1, workers))]

    def owner(self, t: float) -> tuple[int, int]:
        """(rank, workers) in force at schedule time t (rank -1: none of the arrivals)."""
        rank, workers = -1, 1
        for from_t, r, n in self.entries:
            if from_t > t:
                break
            rank, workers = r, n
        return rank, workers

    def mine(self, index: int, t: float) -> bool:
        """Whether arrival `index` at schedule time t is this process's."""
        rank, workers = self.owner(t)
        return rank >= 0 and is_mine(index, rank, workers)


class Arrivals:
    """Replays this process's share of the scenario's arrivals and hands each one to a free user."""

    def __init__(self, scenario: Scenario, seed: int, rank: int = 0, workers: int = 1,
                 duration_s: float | None = None, split: Split | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(f"{seed}:arrivals")  # the same on every worker: one shared sequence
        self.split = split or Split(rank, workers)
        self.duration_s = duration_s if duration_s is not None else scenario.total_duration_s
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
        """The run's whole arrival sequence (all workers'), seconds from the start (tenants' own arrivals aside)."""
        sc = self.scenario
        if sc.arrivals == "tenants":
            return iter(())
        return arrival_times(sc.arrivals, lambda t: self.stage_at(t)[1], self.rng, burstiness=sc.burstiness,
                             on_s=sc.on_s, off_s=sc.off_s, until=self.duration_s)

    def start(self, started_at: float | None = None) -> None:
        """Start the scheduling greenlet; `started_at` (epoch) is schedule time 0 (default now; in a distributed
        run the master's start, so a worker that joins late keeps the run's timeline)."""
        if self._greenlet is None:
            self.started_at = time.time() if started_at is None else started_at
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop scheduling."""
        self.stopped = True
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _plan(self) -> Iterator[tuple[float, int | None, TraceArrival | None, str | None]]:
        """(time, stage, trace arrival, tenant label) of every arrival of the run, in time order."""
        if self.trace is not None:
            base: Iterator[tuple[float, int | None, TraceArrival | None]] = \
                ((LEAD_IN_S + a.t, None, a) for a in self.trace)
        else:
            base = ((t, self.stage_at(t)[0], None) for t in self.times())
        tenants = self.scenario.tenants
        if not tenants:
            return ((t, stage, item, None) for t, stage, item in base)
        shared = [t for t in tenants if t.arrivals is None]
        draw = random.Random(f"{self.seed}:tenant-draw")  # the same on every worker, apart from the schedule's rng
        cum = [sum(t.weight for t in shared[: i + 1]) for i in range(len(shared))]

        def tag(item: tuple[float, int | None, TraceArrival | None]) -> tuple[float, int | None, Any, str | None]:
            if not shared:
                return (*item, None)
            u = draw.random() * cum[-1]
            return (*item, next((t.label for t, c in zip(shared, cum, strict=True) if u < c), shared[-1].label))

        streams: list[Iterator[tuple[float, int | None, Any, str | None]]] = [map(tag, base)]
        for t in tenants:
            a = t.arrivals
            if a is None:
                continue
            rate = a.rate
            times = arrival_times(a.process, lambda _t, r=rate: r, random.Random(f"{self.seed}:arrivals:{t.label}"),
                                  burstiness=a.burstiness, on_s=a.on_s, off_s=a.off_s, until=self.duration_s)
            streams.append(_labelled(times, t.label, self.stage_at))
        return heapq.merge(*streams, key=lambda e: e[0])

    def _run(self) -> None:
        assert self.started_at is not None
        start_wall = self.started_at
        start = time.perf_counter() - (time.time() - start_wall)  # schedule time 0 on the perf_counter clock
        for i, (t, stage, item, tenant) in enumerate(self._plan()):
            if self.stopped:
                return
            if not self.split.mine(i, t):
                continue
            delay = start + t - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
                if self.stopped:
                    return
            elif delay < -1.0:
                # this process's by the split, but more than a second late (a worker that joined or was re-ranked
                # while busy starting its users): never sent late in a burst, counted as dropped
                self.offered += 1
                self.dropped += 1
                continue
            self.offered += 1
            if self.idle > self.tickets.qsize():
                self.tickets.put((start_wall + t, stage, item, i, tenant))
            else:
                self.dropped += 1  # no free user: counted, never queued into a later burst

    def wait(self, timeout: float | None = None) -> tuple[float, int | None, Any, int, str | None] | None:
        """Block a user until an arrival is handed to it: (scheduled epoch, stage index, trace arrival or None,
        the arrival's index in the run's schedule, its tenant's label or None)."""
        self.idle += 1
        try:
            return self.tickets.get(timeout=timeout)
        except Empty:
            return None
        finally:
            self.idle -= 1
