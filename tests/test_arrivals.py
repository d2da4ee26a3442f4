"""Arrival processes at the unit level: gamma's burstiness, on/off periods, stages, the split over workers,
and the scenario keys that set them."""

from __future__ import annotations

import math
import random
import time

import gevent
import numpy as np
import pytest

from locustfiles.arrivals import Arrivals, Split, arrival_times
from locustfiles.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.timeout(60)


def gaps(times: list[float]) -> np.ndarray:
    return np.diff(np.array([0.0, *times]))


@pytest.mark.parametrize("k", [0.25, 0.5, 1.0, 4.0])
def test_gamma_inter_arrivals_have_mean_one_over_rate_and_cv_one_over_sqrt_k(k):
    rate = 50.0
    times = list(arrival_times("gamma", lambda t: rate, random.Random(f"gamma{k}"), burstiness=k, until=600))
    g = gaps(times)
    assert len(g) > 25_000
    assert abs(g.mean() - 1 / rate) / (1 / rate) < 0.03
    cv = g.std() / g.mean()
    assert abs(cv - 1 / math.sqrt(k)) / (1 / math.sqrt(k)) < 0.06, cv


def test_burstier_gamma_crowds_arrivals_into_fewer_busy_seconds():
    def busy_cv(k: float) -> float:
        times = np.array(list(arrival_times("gamma", lambda t: 20.0, random.Random(3), burstiness=k, until=300)))
        counts = np.bincount(times.astype(int), minlength=300)
        return counts.std() / counts.mean()

    assert busy_cv(0.2) > 1.5 * busy_cv(1.0) > 1.5 * busy_cv(5.0)


def test_onoff_sends_nothing_in_off_periods_and_the_rate_in_on_periods():
    on, off, rate = 0.4, 0.6, 50.0
    times = np.array(list(arrival_times("onoff", lambda t: rate, random.Random(5), on_s=on, off_s=off, until=200)))
    phase = np.mod(times, on + off)
    assert (phase < on).all()  # nothing during off periods
    assert abs(len(times) - rate * on * 200) < 4 * math.sqrt(rate * on * 200)  # the rate holds during on time
    per_period = np.bincount((times // (on + off)).astype(int), minlength=200)
    assert (per_period > 0).mean() > 0.99 and per_period.mean() == pytest.approx(rate * on, rel=0.1)
    g = np.diff(times)
    within = g[np.floor(times[1:] / (on + off)) == np.floor(times[:-1] / (on + off))]
    assert within.mean() == pytest.approx(1 / rate, rel=0.08)  # Poisson within an on period
    assert g.max() >= off  # each off period is a gap at least that long


def test_onoff_gap_carries_over_off_periods_exactly():
    # a constant-like draw: exponential gaps replaced by checking the on-time arithmetic directly
    from locustfiles.arrivals import _advance_on_time

    assert _advance_on_time(0.0, 0.3, 0.5, 1.0) == pytest.approx(0.3)
    assert _advance_on_time(0.3, 0.3, 0.5, 1.0) == pytest.approx(1.1)  # 0.2 s of on time, off, then 0.1 s
    assert _advance_on_time(0.7, 0.1, 0.5, 1.0) == pytest.approx(1.1)  # from an off period
    assert _advance_on_time(0.0, 1.2, 0.5, 1.0) == pytest.approx(2.2)  # across two off periods


def test_constant_and_poisson_and_stages():
    assert list(arrival_times("constant", lambda t: 4.0, random.Random(1), until=1.01)) == \
        pytest.approx([0.25, 0.5, 0.75, 1.0])
    stages = lambda t: 10.0 if t < 10 else (0.0 if t < 20 else 40.0)  # noqa: E731
    times = np.array(list(arrival_times("gamma", stages, random.Random(2), burstiness=0.5, until=30)))
    counts = [((times >= a) & (times < b)).sum() for a, b in ((0, 10), (10.5, 20), (20.5, 30))]
    assert abs(counts[0] - 100) < 60 and counts[1] == 0 and abs(counts[2] - 380) < 120
    same = list(arrival_times("poisson", lambda t: 5.0, random.Random(9), until=20))
    assert same == list(arrival_times("poisson", lambda t: 5.0, random.Random(9), until=20))


def test_workers_split_one_shared_sequence_by_index():
    sc = parse_scenario({"mix": [{"endpoint": "chat"}], "duration": "20s",
                         "arrivals": {"process": "gamma", "rate": 30, "burstiness": 0.3}}, "a.yaml")
    whole = list(Arrivals(sc, sc.seed).times())
    assert len(whole) > 400 and whole[-1] < 20  # the schedule ends at the run's duration
    for _ in range(3):  # every worker draws the same sequence from the seed
        assert list(Arrivals(sc, sc.seed).times()) == whole


def _send(arrivals: list[Arrivals], start: float, seconds: float) -> list[list[int]]:
    """Run real Arrivals (one per rank) with a free consumer each; the schedule indices each one handed out."""
    got: list[list[int]] = [[] for _ in arrivals]

    def consume(k: int) -> None:
        while True:
            ticket = arrivals[k].wait(timeout=0.5)
            if ticket is not None:
                got[k].append(ticket[3])

    consumers = [gevent.spawn(consume, k) for k in range(len(arrivals))]
    for a in arrivals:
        a.start(start)
    gevent.sleep(seconds)
    for a in arrivals:
        a.stop()
    gevent.killall(consumers)
    return got


@pytest.mark.serial  # real arrivals on the wall clock: a busy machine drops them (make test runs it alone)
def test_what_arrivals_send_is_split_by_rank_and_resplit_at_one_schedule_time():
    """Three ranks, then the rank-1 worker lost and a new one added at t=1.0: every arrival sent exactly once,
    except the lost worker's from when it died (t=0.6) to the re-split."""
    sc = parse_scenario({"mix": [{"endpoint": "chat"}], "duration": "2s",
                         "arrivals": {"process": "constant", "rate": 100}}, "a.yaml")
    splits = [Split(r, 3) for r in range(3)] + [Split(-1, 1)]
    splits[0].set(0, 3, 1.0)
    splits[2].set(1, 3, 1.0)   # dense ranks 0..2 again from t = 1.0
    splits[3].set(2, 3, 1.0)   # the newcomer
    arrivals = [Arrivals(sc, sc.seed, split=s) for s in splits]
    start = time.time() + 0.05
    lost = arrivals[1]
    gevent.spawn_later(0.05 + 0.6, lost.stop)  # the rank-1 worker dies at t = 0.6
    got = _send(arrivals, start, 2.4)
    sent = [i for part in got for i in part]
    assert len(sent) == len(set(sent))  # no arrival went out twice
    schedule = list(Arrivals(sc, sc.seed).times())
    assert len(schedule) == 199
    holes = set(range(len(schedule))) - set(sent)
    assert holes and all(i % 3 == 1 and 0.55 <= schedule[i] < 1.0 for i in holes), sorted(holes)
    assert not [i for i in got[3] if schedule[i] < 1.0]  # the newcomer only from the re-split on


@pytest.mark.parametrize(
    "arrivals,needle",
    [
        ({"process": "gamma", "rate": 5}, "arrivals.burstiness: process gamma needs burstiness"),
        ({"process": "gamma", "rate": 5, "burstiness": 0}, "arrivals.burstiness: must be positive"),
        ({"process": "gamma", "rate": 5, "burstiness": "high"}, "arrivals.burstiness: expected a number"),
        ({"process": "poisson", "rate": 5, "burstiness": 0.5}, "arrivals.burstiness: only for process gamma"),
        ({"process": "onoff", "rate": 5, "on_s": 1}, "arrivals.off_s: process onoff needs off_s"),
        ({"process": "onoff", "rate": 5, "on_s": 0, "off_s": 1}, "arrivals.on_s: must be positive"),
        ({"process": "onoff", "rate": 5, "on_s": "soon", "off_s": 1}, "arrivals.on_s: expected a duration"),
        ({"process": "constant", "rate": 5, "off_s": 1}, "arrivals.off_s: only for process onoff"),
        ({"process": "gamma", "burstiness": 2}, "arrivals.rate: an open-loop process (gamma) needs a positive rate"),
        ({"process": "onoff", "rate": 5, "on_s": 1, "off_s": 1, "duty": 1}, "arrivals.duty: unknown key"),
    ],
)
def test_bad_arrival_keys_name_the_key(arrivals, needle):
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"mix": [{"endpoint": "chat"}], "arrivals": arrivals}, "bad.yaml")
    assert str(err.value).startswith("bad.yaml: ") and needle in str(err.value), str(err.value)


def test_good_arrival_keys_parse():
    sc = parse_scenario({"mix": [{"endpoint": "chat"}],
                         "arrivals": {"process": "onoff", "rate": 20, "on_s": "500ms", "off_s": 2}}, "a.yaml")
    assert (sc.arrivals, sc.rate, sc.on_s, sc.off_s, sc.open_loop) == ("onoff", 20, 0.5, 2.0, True)
    sc = parse_scenario({"mix": [{"endpoint": "chat"}], "arrivals": {"process": "gamma", "rate": 3, "burstiness": 0.25},
                         "stages": [{"duration": "5s", "rate": 2}]}, "a.yaml")
    assert (sc.arrivals, sc.burstiness, sc.total_duration_s) == ("gamma", 0.25, 5.0)
