"""When the next periodic pass is due: pure functions of the clock and the options.

Two timers, as nova-compute's periodic tasks: the reconcile pass every
``reconcile_interval`` and the reclaim pass every ``reclaim_poll_interval``
(negative disables, as in oslo.service). Jitter spreads a fleet's passes so
10,000 hosts do not hit the Nova DB in the same second; a pass that overruns its
interval pushes the next one a whole interval past its end instead of letting
missed runs stack up.
"""
from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass
class Timer:
    mode: str                    # the pass it runs: "reap" or "reclaim"
    interval: float              # seconds; negative = disabled
    due: float | None = None     # monotonic time of the next run; None = disabled

    @property
    def enabled(self) -> bool:
        return self.interval >= 0 and self.due is not None


def jitter(interval: float, fraction: float, rng: random.Random) -> float:
    return rng.uniform(0.0, max(0.0, fraction) * max(0.0, interval))


def first_due(now: float, interval: float, fraction: float, rng: random.Random) -> float | None:
    """After the init pass: one interval (plus jitter) from now, None when disabled."""
    if interval < 0:
        return None
    return now + interval + jitter(interval, fraction, rng)


def next_due(started: float, finished: float, interval: float, fraction: float,
             rng: random.Random) -> tuple[float | None, bool]:
    """The next run after one that ran from ``started`` to ``finished``.

    Returns (due, overran). On time: ``started + interval`` plus jitter. Overran
    (finished after that): ``finished + interval`` plus jitter, never "at once".
    """
    if interval < 0:
        return None, False
    planned = started + interval
    overran = interval > 0 and finished > planned
    base = finished + interval if overran else max(planned, finished)
    return base + jitter(interval, fraction, rng), overran


def reschedule(timer: Timer, now: float, interval: float, fraction: float,
               rng: random.Random) -> Timer:
    """A SIGHUP changed the interval: re-plan from now (enabling or disabling as asked)."""
    if interval < 0:
        return Timer(timer.mode, interval, None)
    if timer.due is None or interval != timer.interval:
        return Timer(timer.mode, interval, first_due(now, interval, fraction, rng))
    return timer


def pick(timers: list[Timer], now: float) -> Timer | None:
    """The timer to run now (earliest due first; reconcile wins a tie), or None."""
    ready = [t for t in timers if t.enabled and t.due <= now]
    return min(ready, key=lambda t: (t.due, t.mode != "reap")) if ready else None


def sleep_for(timers: list[Timer], now: float, cap: float) -> float:
    dues = [t.due for t in timers if t.enabled]
    return max(0.0, min([cap] + [d - now for d in dues]))
