"""Issue 19 item 11: evaluation's cost is bounded. The schedule keeps evaluation (cycles + the final one)
within EVAL_SHARE of the run, the plan says how many cycles run and why, the run does exactly those,
early stopping still counts evaluations, and the batched evaluation equals scoring example by example."""

import json

import pytest
import torch
from helpers.tiny_models import write_parity_dataset

from tuneforge.catalog import get_model
from tuneforge.data import split_sizes
from tuneforge.engine.batches import collate, encode_example
from tuneforge.engine.eval_plan import EVAL_SHARE, FORWARD_COST, MIN_EVAL_EXAMPLES, EvalPlan
from tuneforge.engine.loss import CompletionLoss
from tuneforge.engine.train import RunSpec, evaluate, fine_tune
from tuneforge.engine.weights import resolve_weights
from tuneforge.hyperparams import make_plan, resolve_training_config

LLAMA = "meta.llama-3.3-70b-instruct"
# 75 examples -> 60 training / 15 validation; the seed's Llama defaults: batch 8, 3 epochs -> 24 steps, patience 15.
N_EXAMPLES = 75


def eval_steps(output) -> list[int]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["kind"] == "eval"]


def run_spec(weights, dataset, output, **overrides) -> RunSpec:
    model = get_model(LLAMA)
    return RunSpec(
        base_model=model,
        config=resolve_training_config(model, overrides),
        dataset=dataset,
        weights=resolve_weights(str(weights), model_id=model.id, weights_repo=model.weights_repo),
        output=output,
        precision="fp32",
    )


@pytest.mark.parametrize("n_examples", [40, 75, 200, 240, 1000, 20_000])
@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize("patience", [0, 3, 15])
def test_schedule_runs_its_cycles_within_the_evaluation_share(n_examples, epochs, patience):
    n_train, n_val = split_sizes(n_examples)
    total = epochs * -(-n_train // 8)
    plan = EvalPlan.make(total, patience, n_train, epochs, n_val)
    due = [s for s in range(1, total + 1) if plan.due(s, total)]
    assert len(due) == plan.cycles and due[-1] == total  # exactly the cycles planned, the last at the last step
    assert plan.cycles <= max(8, 2 * patience + 2) and min(MIN_EVAL_EXAMPLES, n_val) <= plan.examples <= n_val
    # In forward passes of one example: the cycles and the final evaluation against the training work.
    evaluation = (plan.cycles * plan.examples + n_val) * FORWARD_COST
    training = n_train * epochs
    if plan.cycles > 1:  # one cycle at the last step always runs, even where the final evaluation alone fills the share
        assert evaluation <= EVAL_SHARE / (1 - EVAL_SHARE) * training
    if n_examples >= 1000 and epochs == 3:  # a run of some size gets what early stopping wants
        assert plan.cycles == max(8, 2 * patience + 2)


def test_a_24_step_run_no_longer_evaluates_every_step():
    n_train, n_val = split_sizes(N_EXAMPLES)
    plan = EvalPlan.make(24, 15, n_train, 3, n_val)
    assert sum(plan.due(s, 24) for s in range(1, 25)) == plan.cycles < 24


def test_plan_states_how_many_cycles_run_and_why():
    config = resolve_training_config(get_model(LLAMA), {})
    plan = make_plan(N_EXAMPLES, config)
    cycles = plan.evaluation.cycles
    assert plan.to_json()["evaluationCycles"] == cycles < 24
    assert plan.to_json()["evaluationCycleExamples"] == plan.evaluation.examples
    assert f"{cycles} evaluation cycles on " in plan.describe()
    assert "fewer than the 32 early stopping wants" in plan.describe() and "above 15 % of the run's compute" in plan.describe()
    assert "too few for earlyStoppingPatience 15 to end the run early" in plan.describe()
    big = make_plan(5000, config)
    assert big.evaluation.cycles == 32 and "as many as early stopping wants" in big.describe()


def test_the_run_evaluates_as_its_plan_says(tiny_llama, tmp_path):
    dataset = write_parity_dataset(tmp_path / "d.jsonl", n=N_EXAMPLES)
    run = run_spec(tiny_llama, dataset, tmp_path / "out")  # the defaults: 24 steps, patience 15
    result = fine_tune(run)
    plan = make_plan(N_EXAMPLES, run.config)
    assert result.total_training_steps == result.steps_run == 24
    steps = eval_steps(tmp_path / "out")
    assert len(steps) == result.evaluation_cycles == plan.evaluation.cycles < 24
    assert steps == [s for s in range(1, 25) if plan.evaluation.due(s, 24)] and steps[-1] == 24
    assert result.evaluation_cycle_examples == plan.evaluation.examples


def test_early_stopping_still_counts_evaluations(tiny_llama, tmp_path):
    # No evaluation improves by more than 10: the counter grows from the second cycle, patience 2 stops at the third.
    dataset = write_parity_dataset(tmp_path / "d.jsonl", n=N_EXAMPLES)
    run = run_spec(tiny_llama, dataset, tmp_path, totalTrainingEpochs=10, earlyStoppingPatience=2, earlyStoppingThreshold=10.0)
    result = fine_tune(run)
    plan = make_plan(N_EXAMPLES, run.config).evaluation
    due = [s for s in range(1, result.total_training_steps + 1) if plan.due(s, result.total_training_steps)]
    assert eval_steps(tmp_path) == due[:3]
    assert result.early_stopped and result.steps_run == due[2] and result.evaluation_cycles == 3


def test_batched_evaluation_equals_scoring_each_example_alone(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    # Rows of different lengths (padding) that share the chat template's prefix (the shared-prefix pass).
    encoded = [
        encode_example(tok, f"Is {i * 37} odd?" + " Say it." * (i % 4), "yes" if i % 2 else "no, it is not") for i in range(21)
    ]
    loss_sum, correct, tokens = 0.0, 0, 0
    scorer = CompletionLoss(model).eval()
    with torch.no_grad():
        for e in encoded:
            stats = scorer(collate([e], tok.pad_token_id), 0)
            loss_sum, correct, tokens = loss_sum + float(stats.loss_sum), correct + stats.correct, tokens + stats.tokens
    for batch_size in (4, 16, 64):
        loss, accuracy = evaluate(model, encoded, tok.pad_token_id, "cpu", batch_size=batch_size)
        assert loss == pytest.approx(loss_sum / tokens, rel=1e-5)
        assert accuracy == correct / tokens
