"""Failure injection for the batch endpoint, to test senders against a flaky service.

With probability ``fail_rate`` a batch call fails one of three ways, chosen
uniformly from a seeded RNG so a failing run can be replayed:

- ``503``: refused before anything is recorded;
- ``429``: refused before anything is recorded, with ``Retry-After: 1``;
- ``hang``: the batch IS recorded, then the answer waits ``hang_seconds``.
  That is the case at-least-once delivery exists for: the sender times out
  without knowing the events landed, resends them, and dedupe must hold.
"""

from __future__ import annotations

import math
import random
from typing import Literal

__all__ = ["FAULTS", "Fault", "Faults"]

Fault = Literal["503", "429", "hang"]
FAULTS: tuple[Fault, ...] = ("503", "429", "hang")


class Faults:
    def __init__(self, *, fail_rate: float = 0.0, hang_seconds: float = 10.0, seed: int = 0) -> None:
        if isinstance(fail_rate, bool) or not isinstance(fail_rate, (int, float)) or not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be a number from 0 to 1, got {fail_rate!r}")
        if not isinstance(hang_seconds, (int, float)) or not math.isfinite(hang_seconds) or hang_seconds < 0:
            raise ValueError(f"hang_seconds must be a non-negative number, got {hang_seconds!r}")
        self.fail_rate = float(fail_rate)
        self.hang_seconds = float(hang_seconds)
        self.seed = seed
        self._rng = random.Random(seed)

    def draw(self) -> Fault | None:
        """The fault for the next batch call, or ``None``; draws nothing when off."""
        if self.fail_rate <= 0.0:
            return None
        if self._rng.random() >= self.fail_rate:
            return None
        return self._rng.choice(FAULTS)

    def reset(self) -> None:
        self._rng = random.Random(self.seed)
