"""When a run's evaluation cycles happen and on how many examples. Stdlib only: `tuneforge plan`'s
capacity model (tuneforge/capacity.py) counts their cost without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

EVAL_SHARE = 0.4  # evaluation-cycle examples, all cycles together, per training example processed
MIN_EVAL_EXAMPLES = 8


@dataclass(frozen=True)
class EvalPlan:
    """When evaluation cycles run and on how many validation examples.

    Patience counts evaluations, so a run needs more than `patience` cycles for early stopping to
    mean anything: we plan 2 * patience + 2 cycles (at least 8), evenly spaced in steps, plus one at
    the last step. Evaluating the whole validation split that often would cost more than training,
    so each cycle evaluates the same fixed, seeded subset of it, sized so that all cycles together
    see EVAL_SHARE validation examples per training example processed (a forward pass costs about a
    third of a training step: evaluation stays near 15 % of the wall time). The final metrics
    always use the whole validation split."""

    every: int
    examples: int

    @staticmethod
    def make(total_steps: int, patience: int, n_train: int, epochs: int, n_val: int) -> EvalPlan:
        cycles = min(total_steps, max(8, 2 * patience + 2))
        every = max(1, total_steps // cycles)
        budget = math.ceil(EVAL_SHARE * n_train * epochs / cycles)
        return EvalPlan(every, min(n_val, max(MIN_EVAL_EXAMPLES, budget)))

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps
