"""Open-loop arrivals shared by a process's users: constant or Poisson, dropped when no user is free."""

from __future__ import annotations

import random
import time

import gevent
from gevent.queue import Empty, Queue

from .scenario import Scenario


class Arrivals:
    """Schedules this process's share of the scenario's rate and hands each arrival to a free user."""

    def __init__(self, scenario: Scenario, seed: int, worker: int, workers: int = 1) -> None:
        self.scenario = scenario
        self.rng = random.Random(f"{seed}:arrivals:{worker}")
        self.workers = max(1, workers)
        self.tickets: Queue = Queue()
        self.idle = 0
        self.offered = 0
        self.dropped = 0
        self.started_at: float | None = None
        self._greenlet: gevent.Greenlet | None = None
        self.stopped = False

    def set_workers(self, workers: int) -> None:
        """Re-split the total rate over a new number of worker processes."""
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

    def _run(self) -> None:
        assert self.started_at is not None
        start_wall = self.started_at
        start = time.perf_counter()
        t_next = 0.0
        poisson = self.scenario.arrivals == "poisson"
        while not self.stopped:
            _, rate = self.stage_at(t_next)
            share = rate / self.workers
            if share <= 0:
                t_next += 0.1
                if t_next > self.scenario.total_duration_s + 1:
                    return
                gevent.sleep(0.1)
                continue
            t_next += self.rng.expovariate(share) if poisson else 1.0 / share
            delay = start + t_next - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            self.offered += 1
            if self.idle > self.tickets.qsize():
                self.tickets.put((start_wall + t_next, self.stage_at(t_next)[0]))
            else:
                self.dropped += 1  # no free user: counted, never queued into a later burst

    def wait(self, timeout: float | None = None) -> tuple[float, int | None] | None:
        """Block a user until an arrival is handed to it: (scheduled epoch, stage index)."""
        self.idle += 1
        try:
            return self.tickets.get(timeout=timeout)
        except Empty:
            return None
        finally:
            self.idle -= 1
