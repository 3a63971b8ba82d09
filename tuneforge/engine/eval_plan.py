"""When a run's evaluation cycles happen and on how many examples. Stdlib only: `tuneforge plan`
(hyperparams.make_plan) states the schedule and its capacity model (tuneforge/capacity.py) counts its
cost, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

# Evaluation, the cycles and the final evaluation together, takes at most this share of the run's
# training + evaluation work (the README's promise, "What the numbers mean").
EVAL_SHARE = 0.15
# A forward pass over an example costs about a third of a training step's work on it (forward, then a
# backward about twice as long). Issue 19's run of the stand-in on an AVX2 EPYC: 16 s for 120 example
# forwards against 59-67 s of training steps for 160 examples, i.e. 0.13 s against 0.37-0.42 s.
FORWARD_COST = 1 / 3
MIN_EVAL_EXAMPLES = 8  # fewer, and one cycle's loss is too noisy to compare with the next


@dataclass(frozen=True)
class EvalPlan:
    """When evaluation cycles run and on how many validation examples.

    Patience counts evaluations, so early stopping wants more than `patience` cycles: 2 * patience + 2
    of them (at least 8), spread evenly over the steps, the last one at the last step. Their cost is
    bounded: in forward passes of one example, training costs 3 per training example processed, and
    evaluation may cost EVAL_SHARE / (1 - EVAL_SHARE) of that. The final evaluation (the kept adapter
    on the whole validation split) is paid first; what is left buys the cycles, each on the same fixed,
    seeded subset of at least MIN_EVAL_EXAMPLES validation examples. When it cannot buy all the cycles
    early stopping wants, fewer run (at least one, at the last step). Examples stand for tokens: the
    split is a seeded shuffle, so validation examples are as long as training ones on average, and the
    plan stays the same before the dataset is tokenized (`tuneforge plan`, the service's checks)."""

    every: int  # steps between cycles (rounded: cycle k runs at step ceil(k * total / cycles))
    examples: int  # validation examples each cycle scores
    cycles: int = 1  # cycles in a run that is not stopped early
    wanted: int = 8  # what early stopping wants: 2 * patience + 2, at least 8
    patience: int = 0
    n_val: int = 0
    total_steps: int = 1

    @staticmethod
    def make(total_steps: int, patience: int, n_train: int, epochs: int, n_val: int) -> EvalPlan:
        total_steps, n_val = max(1, total_steps), max(1, n_val)
        wanted = max(8, 2 * patience + 2)
        allowed = EVAL_SHARE / (1 - EVAL_SHARE) * n_train * epochs / FORWARD_COST
        budget = int(allowed) - n_val  # left for the cycles once the final evaluation is paid
        smallest = min(MIN_EVAL_EXAMPLES, n_val)
        cycles = max(1, min(total_steps, wanted, budget // smallest))
        examples = min(n_val, max(smallest, budget // cycles))
        return EvalPlan(round(total_steps / cycles), examples, cycles, wanted, patience, n_val, total_steps)

    def due(self, step: int, total_steps: int) -> bool:
        """Whether `step` (1-based) ends with a cycle: `cycles` of them, evenly spread, the last at the
        last step (the steps k * total / cycles, rounded up)."""
        return step * self.cycles // total_steps > (step - 1) * self.cycles // total_steps

    def describe(self) -> str:
        """How many cycles run and why, in one sentence (the plan's summary says it)."""
        cycles = f"{self.cycles} evaluation cycle{'s' if self.cycles > 1 else ''}"
        if self.examples == self.n_val:
            what = f"{cycles} on all {self.n_val} validation examples, then a final evaluation of the kept adapter"
        else:
            what = f"{cycles} on {self.examples} of the {self.n_val} validation examples, then a final one on all of them"
        share = f"{EVAL_SHARE * 100:.0f} % of the run's compute"
        if self.patience > 0:
            who, rule = "early stopping", "(2 * earlyStoppingPatience + 2, at least 8)"
        else:
            who, rule = "a validation curve", "(early stopping is off)"
        if self.cycles == self.wanted:
            why = f"as many as {who} wants {rule}, within {share}"
        elif self.cycles == self.total_steps:
            why = f"one per step, fewer than the {self.wanted} {who} wants {rule}"
        else:
            why = f"fewer than the {self.wanted} {who} wants {rule}, as more would take evaluation above {share}"
        if self.patience > 0 and self.cycles <= self.patience + 1:
            why += f"; too few for earlyStoppingPatience {self.patience} to end the run early"
        return f"{what}: {why}"
