"""An attempt's wall-clock start and its perf_counter reference are read as one moment."""

from __future__ import annotations

import time

from locustfiles import caller


def test_a_pause_between_the_two_reads_is_read_again(monkeypatch):
    """The first wall-clock read is followed by a 5 ms pause (the OS or a garbage collection between the two reads):
    the pair returned is still one moment, to well under a millisecond, checked against a fresh read of both clocks."""
    real = time.time
    calls = []

    def paused() -> float:
        now = real()
        if not calls:
            time.sleep(0.005)
        calls.append(now)
        return now

    monkeypatch.setattr(caller.time, "time", paused)
    epoch, perf = caller.clock_pair()
    monkeypatch.setattr(caller.time, "time", real)
    skew = (time.time() - epoch) - (time.perf_counter() - perf)
    assert len(calls) == 2 and abs(skew) < 0.001, (calls, skew)
