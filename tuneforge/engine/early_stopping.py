"""Early stopping with the seed's semantics.

An evaluation whose loss improves on the best so far by more than `threshold` (absolute, strict)
resets the patience counter; any other evaluation increments it; training stops when the counter
reaches `patience`; patience 0 disables stopping. As in Hugging Face's EarlyStoppingCallback (the
only implementation that pins these choices down in code), the best loss moves on any strict
improvement, even one too small to reset the counter, and that best evaluation's adapter is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int
    threshold: float
    best: float | None = None
    counter: int = 0

    def update(self, loss: float) -> bool:
        """Record one evaluation; returns True when it is a new best (its adapter should be kept)."""
        if self.best is None or self.best - loss > self.threshold:
            self.counter = 0
        else:
            self.counter += 1
        is_best = self.best is None or loss < self.best
        if is_best:
            self.best = loss
        return is_best

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.counter >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)
