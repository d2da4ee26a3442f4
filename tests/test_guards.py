"""The mid-run refusal guard: its sliding window, checked against a recount of every step by hand."""

from __future__ import annotations

import random

from locustfiles.guards import EXIT_REFUSED_MID_RUN, Hopeless
from locustfiles.profile import Profile


def test_the_window_counts_refusals_as_they_enter_and_leave():
    """Refused and fine calls over 60 s at random times: at every call the verdict is the one a recount of the
    last 10 s gives (at least 10 calls, more than half refused), however long ago refusals came and went."""
    rng = random.Random(7)
    guard = Hopeless(Profile(), window_s=10.0, min_calls=10, share=0.5)
    seen: list[tuple[float, bool]] = []
    now, verdicts = 1000.0, 0
    for i in range(3000):
        now += rng.expovariate(50.0)
        phase = int((now - 1000.0) // 7) % 3  # runs of mostly refused and mostly fine calls, 7 s each
        refused = rng.random() < (0.9 if phase == 0 else 0.1 if phase == 1 else 0.5)
        rec = {"status": 401 if refused else 200, "error_kind": "http_4xx" if refused else None,
               "model": "m", "final": True}
        if i < 3:  # the first calls are judged together: keep them fine so the window alone decides
            rec = {"status": 200, "error_kind": None, "model": "m", "final": True}
            refused = False
        seen.append((now, refused))
        window = [r for t, r in seen if now - t <= 10.0]
        expected = len(window) >= 10 and sum(window) / len(window) > 0.5
        got = guard.observe(rec, now=now)
        assert (got is not None and got[0] == EXIT_REFUSED_MID_RUN) == expected, (i, got, sum(window), len(window))
        verdicts += expected
    assert 100 < verdicts < 2900  # both verdicts met many times


def test_an_answered_call_is_never_a_refusal_whatever_the_rules_say():
    """A profile rule that a success would match (status 200) never makes an answered call a refusal, in the
    first calls' verdict or in the window; a failed call that a rule names still is one."""
    profile = Profile(auth_errors=[{"status": 200}, {"status": 401}])
    guard = Hopeless(profile, window_s=10.0, min_calls=3, share=0.5)
    ok = {"status": 200, "ok": True, "error_kind": None, "model": "m", "final": True}
    for i in range(20):
        assert guard.observe(dict(ok), now=1000.0 + i) is None
    assert guard.refused_total == 0 and not guard.refused(ok)
    refused = {"status": 401, "ok": False, "error_kind": "http_4xx", "model": "m", "final": True}
    assert guard.refused(refused)
    verdicts = [guard.observe(dict(refused), now=1020.0 + i / 10) for i in range(30)]
    assert guard.refused_total == 30 and verdicts[-1] is not None and verdicts[-1][0] == EXIT_REFUSED_MID_RUN
