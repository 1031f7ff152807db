"""The wall-time budget of `tune`: what its trainings have cost so far, and whether one more refinement round fits.

Inputs: the wall time of each lockstep call and the step times of the layers it trained. Output: `fits()` (and a
record of the first round left out). A lockstep call's time is shared among its layers by their step times; the
calls of refinement rounds (one design alone, the full softmax's runs reused) are kept apart from the first round's:
they are what a further round repeats, evaluations included.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

# a round's estimate is raised by this share: on KJV consecutive probes trained slower designs as they closed in
# on the choice (proxy step 137.9 -> 148.7 ms, +8%; benchmarks/tune_corpora.py, commit fa8e7fb), so the last
# round's cost undershoots the next one's; without it that run ended 0.09 min over its 15-minute budget
MARGIN = 0.10


@dataclass
class Budget:
    """Trainings' costs per seed so far, and the time left of `minutes` (None: no limit) since `started`."""

    started: float  # time.perf_counter() at the start of the tune
    minutes: float | None
    confirm: bool = False  # keep room for the confirmation (one design and one full softmax) after the refinement
    design_s: list[float] = field(default_factory=list)  # one adaptive design's training, per seed, first round
    full_s: list[float] = field(default_factory=list)  # the full softmax's
    refined_s: list[float] = field(default_factory=list)  # one design's training per seed in a refinement round
    stopped: dict | None = None  # the refinement round the budget left out

    def add(
        self, seconds: float, step_ms: dict[str, list[float]], full: str | None = None, refined: bool = False
    ) -> None:
        """A lockstep call of `seconds` that trained each named layer with these step times (one per seed); the
        layer named `full` is the full softmax; `refined`: a refinement round's call."""
        total = sum(map(sum, step_ms.values()))
        if total <= 0:
            return
        for name, times in step_ms.items():
            into = self.full_s if name == full else self.refined_s if refined else self.design_s
            into.extend(seconds * ms / total for ms in times)

    def estimate(self, trainings: int, full: int = 0) -> float:
        """Seconds for `trainings` more design trainings and `full` full-softmax trainings in a refinement round
        (and the confirmation), margin included: a design's cost from the refinement rounds' once one ran, else
        from the first round's designs."""
        design = statistics.median(self.refined_s or self.design_s)
        full_s = statistics.median(self.full_s) if self.full_s else design
        needed = design * trainings + full_s * full
        if self.confirm:
            needed += design + full_s
        return needed * (1 + MARGIN)

    def fits(self, trainings: int, round_no: int, full: int = 0, record: bool = True) -> bool:
        """Whether `trainings` more design trainings and `full` full-softmax ones (and the confirmation) fit;
        records the round that does not (unless `record` is False: the caller has another round to try)."""
        if self.minutes is None or not (self.design_s or self.refined_s):
            return True
        elapsed = time.perf_counter() - self.started
        needed = self.estimate(trainings, full)
        if elapsed + needed <= 60 * self.minutes:
            return True
        if record:
            left = self.minutes - elapsed / 60
            self.stopped = {"round": round_no, "estimate_minutes": needed / 60, "left_minutes": left}
        return False

    def report(self) -> dict:
        """{minutes, used_minutes, stopped}: the budget, the wall time spent so far, the round left out (or None)."""
        used = (time.perf_counter() - self.started) / 60
        return {"minutes": self.minutes, "used_minutes": used, "stopped": self.stopped}
