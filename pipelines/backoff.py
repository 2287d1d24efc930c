"""Exponential backoff with jitter, shared by every retry loop (sender, disk buffer, Kafka
metadata updates)."""

from __future__ import annotations

import random


class Backoff:
    """`next()` gives the current delay times a random factor in [low, high] and doubles the
    delay up to `cap`; `reset()` starts over from `initial`."""

    def __init__(self, initial: float, cap: float, low: float = 0.5, high: float = 1.0) -> None:
        self.initial, self.cap, self.low, self.high = initial, cap, low, high
        self.delay = initial

    def next(self) -> float:
        d = self.delay * random.uniform(self.low, self.high)
        self.delay = min(self.cap, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.initial
