"""Adaptive debounce: how long to wait after a keystroke before asking the model.

Waiting saves work that the next keystroke would throw away; it also adds to every latency. The
adaptive rule (used when the `debounceMs` setting is null/"auto"):

    delay = clamp(median of the user's recent keystroke intervals, MIN_MS, MAX_MS)
    delay = min(delay, max(MIN_MS, median recent model time))  once the model's speed is known

A fast typist (80 ms between keys) waits ~80 ms, so no request starts in the middle of a word; a
slow one does not wait longer than their rhythm. When the model is quicker than the user's
rhythm, waiting costs more latency than the work it saves (a superseded request is cancelled
between two steps), so the delay drops to the model's time. Pauses longer than PAUSE_MS are not
typing rhythm and are ignored. Invoked requests (the user asked) are never debounced.
"""

from __future__ import annotations

import statistics
from collections import deque

DEFAULT_MS = 75.0  # before any keystroke has been seen
MIN_MS = 15.0
MAX_MS = 250.0
PAUSE_MS = 1000.0
HISTORY = 8


class AdaptiveDebounce:
    def __init__(self, fixed_ms: float | None = None):
        self.fixed_ms = fixed_ms  # the setting; None = adaptive
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=HISTORY)
        self._model_ms: deque[float] = deque(maxlen=HISTORY)

    def keystroke(self, t: float):
        """A document changed at time `t` (seconds, monotonic)."""
        if self._last is not None:
            dt = (t - self._last) * 1000
            if 0 < dt < PAUSE_MS:
                self._intervals.append(dt)
        self._last = t

    def model_time(self, ms: float):
        """The core took `ms` for a request (queue + compute)."""
        self._model_ms.append(ms)

    def delay_ms(self) -> float:
        if self.fixed_ms is not None:
            return float(self.fixed_ms)
        delay = statistics.median(self._intervals) if self._intervals else DEFAULT_MS
        delay = min(MAX_MS, max(MIN_MS, delay))
        if self._model_ms:
            delay = min(delay, max(MIN_MS, statistics.median(self._model_ms)))
        return delay
