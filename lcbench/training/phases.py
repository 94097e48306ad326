"""Where a run's wall time goes: named phases timed with one clock, recorded as `cost.phases` in the run's
`result.json` (seconds), so that a sweep's profile (`make bench`: `results/bench/sweep_profile.md`) can say
what its runs spend outside their training steps. Timings only: no metric depends on them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    """Seconds per named phase, summed over every time the phase is entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {name: round(seconds, 6) for name, seconds in self.seconds.items()}
