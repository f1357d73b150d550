"""CPU time of the sections of straight-line code, for the simulation's stage breakdown.

The detector is one long columnar pass; wrapping each of its sections in a ``with`` block
would re-indent it for a measurement. A :class:`Laps` books, at each ``lap(name)``, the CPU
time since the previous lap to ``name``, and does nothing when no table is given.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping

__all__ = ["Laps"]


class Laps:
    """Books CPU time (``time.process_time``) between successive laps into ``timing``.

    Parameters
    ----------
    timing
        Table of seconds per section name, added to (a name seen twice accumulates);
        ``None`` turns every lap into a no-op.
    """

    __slots__ = ("_t", "timing")

    def __init__(self, timing: MutableMapping[str, float] | None) -> None:
        self.timing = timing
        self._t = time.process_time() if timing is not None else 0.0

    def __call__(self, name: str) -> None:
        """Book the time since the previous lap (or the start) to ``name``."""
        if self.timing is None:
            return
        t = time.process_time()
        self.timing[name] = self.timing.get(name, 0.0) + (t - self._t)
        self._t = t
