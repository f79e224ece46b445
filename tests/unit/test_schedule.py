"""The agent's timers: intervals, jitter, overruns, disabling (pure)."""
from __future__ import annotations

import random

import pytest

from reaper.agent import schedule


class FixedRng(random.Random):
    """uniform() returns its upper bound, so jitter is at its largest and visible."""

    def uniform(self, a, b):
        return b


@pytest.mark.parametrize("started, finished, interval, frac, want_due, want_over", [
    (100.0, 110.0, 600, 0.0, 700.0, False),     # on time: start + interval
    (100.0, 110.0, 600, 0.1, 760.0, False),     # plus up to 10% jitter
    (100.0, 699.0, 600, 0.0, 700.0, False),     # just in time
    (100.0, 900.0, 600, 0.0, 1500.0, True),     # overran: a whole interval after it ends
    (100.0, 900.0, 600, 0.5, 1800.0, True),
    (100.0, 110.0, -1, 0.1, None, False),       # negative disables
    (100.0, 110.0, 0, 0.1, 110.0, False),       # 0 = back to back, still never stacked
])
def test_next_due(started, finished, interval, frac, want_due, want_over):
    assert schedule.next_due(started, finished, interval, frac, FixedRng()) == (
        want_due, want_over)


def test_jitter_spreads_a_fleet_within_the_fraction():
    rng = random.Random(7)
    dues = [schedule.first_due(0.0, 600, 0.1, rng) for _ in range(1000)]
    assert min(dues) >= 600 and max(dues) <= 660
    # 1,000 hosts do not start in lockstep: they spread over most of the window
    assert max(dues) - min(dues) > 50
    assert len({round(d) for d in dues}) > 50


def test_first_due_disabled():
    assert schedule.first_due(0.0, -1, 0.1, random.Random()) is None


def test_pick_earliest_and_reconcile_wins_a_tie():
    timers = [schedule.Timer("reclaim", 300, 50.0), schedule.Timer("reap", 600, 50.0)]
    assert schedule.pick(timers, 49.0) is None
    assert schedule.pick(timers, 50.0).mode == "reap"
    timers[0].due = 40.0
    assert schedule.pick(timers, 50.0).mode == "reclaim"
    assert schedule.pick([schedule.Timer("reap", -1, None)], 1e9) is None


def test_sleep_for_caps_at_the_watchdog_interval():
    timers = [schedule.Timer("reap", 600, 700.0), schedule.Timer("reclaim", -1, None)]
    assert schedule.sleep_for(timers, 100.0, cap=5.0) == 5.0
    assert schedule.sleep_for(timers, 698.0, cap=5.0) == 2.0
    assert schedule.sleep_for(timers, 800.0, cap=5.0) == 0.0
    assert schedule.sleep_for([schedule.Timer("reap", -1, None)], 0.0, cap=5.0) == 5.0


def test_reschedule_on_reload():
    rng = FixedRng()
    t = schedule.Timer("reap", 600, 700.0)
    assert schedule.reschedule(t, 100.0, 600, 0.0, rng) is t          # unchanged
    assert schedule.reschedule(t, 100.0, 60, 0.0, rng).due == 160.0    # shorter: from now
    off = schedule.reschedule(t, 100.0, -1, 0.0, rng)
    assert off.due is None and not off.enabled
    assert schedule.reschedule(off, 200.0, 30, 0.0, rng).due == 230.0  # enabled again
