"""Wall-clock budget of a fit: stop early enough that the work done after the last step (final
occupancy refresh, save, preview) still ends inside ``--seconds``.

Every cost is predicted from what this run has measured so far (the slowest recent step, the
last save, the last occupancy pass, the last preview), scaled by a safety factor, because on a
shared machine the next step can take longer than the last one.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

SAFETY = 1.3  # predicted costs are multiplied by this
TARGET = 0.985  # aim to finish at this fraction of the budget


@dataclass
class Budget:
    seconds: float | None  # None: no wall-clock limit
    start: float = field(default_factory=time.perf_counter)  # when the fit began (scene loading counts)
    steps: deque = field(default_factory=lambda: deque(maxlen=8))
    costs: dict = field(default_factory=dict)  # "save", "occupancy_pass", "preview" -> seconds
    first_in_window: bool = True  # the deque still holds the call's first step

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, what: str, seconds: float) -> None:
        if what == "step":
            self.first_in_window = len(self.steps) < (self.steps.maxlen or 0) and self.first_in_window
            self.steps.append(seconds)
        else:
            self.costs[what] = seconds

    def timed(self, what: str, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        self.record(what, time.perf_counter() - t)
        return result

    def step_estimate(self) -> float:
        """The slowest recent step, leaving out a call's first (warm-up) step once there are others."""
        recent = list(self.steps)[1:] if len(self.steps) > 1 and self.first_in_window else list(self.steps)
        return max(recent) if recent else 0.0

    def must_stop(self, extra: float, tail: float) -> bool:
        """True when one more step (plus ``extra`` periodic work) would leave too little for the tail."""
        if self.seconds is None:
            return False
        needed = SAFETY * (self.step_estimate() + extra + tail)
        return self.elapsed() + needed >= TARGET * self.seconds

    def fits(self, seconds: float) -> bool:
        """Whether work predicted to take ``seconds`` still ends inside the budget."""
        return self.seconds is None or self.elapsed() + SAFETY * seconds < TARGET * self.seconds
