"""The training loop on tiny random models: it learns, runs the exact step count, logs on OCI's
schedule, stops early, resumes to the same result, saves a PEFT adapter that reloads identically,
and fails clearly on bad weights."""

import json
import threading
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import write_parity_dataset
from safetensors.torch import load_file

from tuneforge.catalog import get_model
from tuneforge.engine.train import RunSpec, TrainingStopped, fine_tune
from tuneforge.engine.weights import resolve_weights
from tuneforge.errors import DatasetError, WeightsError
from tuneforge.hyperparams import resolve_training_config
from tuneforge.run_folder import RunFolder

LLAMA, COHERE = "meta.llama-3.3-70b-instruct", "cohere.command-r-08-2024"


def make_run(weights_dir, dataset, output, model_id=LLAMA, **overrides) -> RunSpec:
    model = get_model(model_id)
    return RunSpec(
        base_model=model,
        config=resolve_training_config(model, overrides),
        dataset=dataset,
        weights=resolve_weights(str(weights_dir), model_id=model.id, weights_repo=model.weights_repo),
        output=output,
        precision="fp32",
    )


def records(output: Path, kind: str) -> list[dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.parametrize(
    "model_id,arch,lr", [(LLAMA, "tiny_llama", 0.05), (COHERE, "tiny_cohere", 0.1), (LLAMA, "tiny_cohere", 0.05)]
)
def test_both_methods_learn_and_run_exact_steps(model_id, arch, lr, request, parity_dataset, tmp_path):
    weights = request.getfixturevalue(arch)
    run = make_run(
        weights, parity_dataset, tmp_path / "out", model_id, totalTrainingEpochs=10, learningRate=lr, earlyStoppingPatience=0
    )
    result = fine_tune(run)
    # 48 examples -> 38 train / 10 validation; batch 8 (LoRA) or 16 (T-Few)
    batch = 8 if model_id == LLAMA else 16
    assert result.total_training_steps == result.steps_run == 10 * -(-38 // batch)
    evals = records(tmp_path / "out", "eval")
    assert evals[-1]["validationLoss"] < 0.6 * evals[0]["validationLoss"]
    # early stopping disabled: the model is the last step's (the last cycle here sees the whole validation split)
    assert result.best_step == result.steps_run
    assert result.final_loss == pytest.approx(evals[-1]["validationLoss"], rel=1e-4)
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "checkpoint").exists()
    assert "Validation loss" in (tmp_path / "out" / "report.html").read_text()


def test_training_records_follow_ocis_logging_schedule(tiny_llama, parity_dataset, tmp_path):
    # 38 train, batch 8 -> 5 steps/epoch; 10 epochs -> 50 steps; interval 10
    fine_tune(make_run(tiny_llama, parity_dataset, tmp_path, totalTrainingEpochs=10, earlyStoppingPatience=0))
    train = records(tmp_path, "train")
    assert [r["step"] for r in train] == list(range(1, 21)) + [30, 40, 50]
    assert set(train[0]) >= {"step", "epoch", "loss", "learningRate", "tokensPerSecond", "elapsedSeconds"}
    assert train[-1]["epoch"] == 10.0


def test_early_stopping_fires_and_keeps_the_best_adapter(tiny_llama, parity_dataset, tmp_path):
    # no evaluation can improve by more than 10: the counter grows from the second one, patience 2 stops at the third
    result = fine_tune(
        make_run(
            tiny_llama,
            parity_dataset,
            tmp_path,
            totalTrainingEpochs=10,
            learningRate=0.05,
            earlyStoppingPatience=2,
            earlyStoppingThreshold=10.0,
        )
    )
    evals = records(tmp_path, "eval")
    assert result.early_stopped and result.steps_run < result.total_training_steps
    assert [e["patienceCounter"] for e in evals] == [0, 1, 2]
    best = min(evals, key=lambda e: e["validationLoss"])
    assert result.best_step == best["step"]


# 4 epochs of 5 steps, 8 evaluation cycles (steps 3, 5, 8, 10, ...): step 7 is between cycles, step 8 is
# due one (a stop skips it, and the resumed run does it first).
@pytest.mark.parametrize("stop_at", [7, 8])
def test_resume_after_stop_reaches_the_same_adapter(stop_at, tiny_llama, parity_dataset, tmp_path):
    from safetensors.torch import load_file

    kw = dict(totalTrainingEpochs=4, learningRate=0.01, earlyStoppingPatience=3)
    full = fine_tune(make_run(tiny_llama, parity_dataset, tmp_path / "full", **kw))

    stopped_run = make_run(tiny_llama, parity_dataset, tmp_path / "split", **kw)
    asked = threading.Event()
    stopped_run.listeners = [lambda r: r["kind"] == "train" and r["step"] == stop_at and asked.set()]
    stopped_run.should_stop = asked.is_set
    with pytest.raises(TrainingStopped) as stopped:
        fine_tune(stopped_run)
    assert stopped.value.step == stop_at
    assert [r["step"] for r in records(tmp_path / "split", "eval")] == [3, 5]
    assert (tmp_path / "split" / "checkpoint" / "state.pt").is_file()
    assert not (tmp_path / "split" / "model.json").exists()

    resumed_run = make_run(tiny_llama, parity_dataset, tmp_path / "split", **kw)
    resumed_run.resume = True
    resumed = fine_tune(resumed_run)
    assert resumed.steps_run == full.steps_run
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-6)
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    for kind in ("train", "eval"):
        assert [r["step"] for r in records(tmp_path / "split", kind)] == [r["step"] for r in records(tmp_path / "full", kind)]
    assert [r["validationLoss"] for r in records(tmp_path / "split", "eval")] == pytest.approx(
        [r["validationLoss"] for r in records(tmp_path / "full", "eval")], rel=1e-6
    )
    assert resumed.best_step == full.best_step
    # resuming a run that already finished returns its result instead of training again
    assert fine_tune(resumed_run) == resumed


@pytest.mark.parametrize("model_id", [LLAMA, COHERE])
def test_adapter_loads_in_plain_peft_with_identical_logits(model_id, tiny_llama, parity_dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.generate import load_trained

    fine_tune(
        make_run(
            tiny_llama, parity_dataset, tmp_path, model_id, totalTrainingEpochs=2, learningRate=0.05, earlyStoppingPatience=0
        )
    )
    ours = load_trained(tmp_path, device="cpu", precision="fp32").model
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32), tmp_path / "adapter")
    peft.eval()
    ids = torch.tensor([[1, 5, 9, 33, 2, 70, 12]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)(ids).logits
    with torch.no_grad():
        got, want = ours(ids).logits, peft(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter really changes the model


def test_bad_weights_fail_with_clear_messages(tmp_path, parity_dataset):
    with pytest.raises(WeightsError, match=r"no weights configured for meta\.llama-3\.3-70b-instruct.*--weights stand-in"):
        resolve_weights(None, model_id=LLAMA, weights_repo="meta-llama/Llama-3.3-70B-Instruct")
    with pytest.raises(WeightsError, match="not a Hugging Face model folder"):
        resolve_weights(str(tmp_path), model_id=LLAMA, weights_repo="x/y")


def test_unsupported_architecture_is_rejected(tmp_path, parity_dataset):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(WeightsError, match="architecture 'gpt2' is not supported"):
        fine_tune(make_run(tmp_path / "gpt2", parity_dataset, tmp_path / "out"))


def test_train_records_carry_the_token_accuracy_and_the_last_3_cycles_adapters_are_kept(tiny_llama, parity_dataset, tmp_path):
    """OpenAI's train_mean_token_accuracy and checkpoints: each "train" record has the token accuracy over
    its window; the adapters of the last 3 evaluation cycles stay in the run folder, the last one the model's."""
    fine_tune(make_run(tiny_llama, parity_dataset, tmp_path, totalTrainingEpochs=10, learningRate=0.05, earlyStoppingPatience=0))
    train = records(tmp_path, "train")
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in train)
    assert train[-1]["accuracy"] > train[0]["accuracy"]  # it learns the task
    cycles = [r["step"] for r in records(tmp_path, "eval")]
    folder = RunFolder(tmp_path)
    assert len(cycles) > 3 and folder.cycle_adapter_steps() == cycles[-3:]
    assert (folder.cycle_adapter_dir(cycles[-1]) / "adapter_config.json").is_file()
    last = load_file(folder.cycle_adapter_dir(cycles[-1]) / "adapter_model.safetensors")
    final = load_file(folder.adapter_dir / "adapter_model.safetensors")  # patience 0: the last step's adapter
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)


def test_a_validation_dataset_is_the_validation_split_and_all_of_the_dataset_trains(tiny_llama, parity_dataset, tmp_path):
    run = make_run(tiny_llama, parity_dataset, tmp_path / "out", totalTrainingEpochs=1, earlyStoppingPatience=0)
    run.validation_dataset = write_parity_dataset(tmp_path / "valid.jsonl", n=5, seed=1)
    result = fine_tune(run)
    assert (result.training_examples, result.validation_examples, result.total_training_steps) == (48, 5, 6)
    # OCI's split of the same 48 would be 38 + 10. A validation file's problems are named by its own lines.
    too_long = tmp_path / "long.jsonl"
    too_long.write_text(json.dumps({"prompt": "Is 3 odd?", "completion": "yes"}) + "\n")
    too_long.write_text(too_long.read_text() + json.dumps({"prompt": "Is 3 odd?", "completion": " yes" * 600}) + "\n")
    run = make_run(tiny_llama, parity_dataset, tmp_path / "bad", totalTrainingEpochs=1)
    run.validation_dataset = too_long
    with pytest.raises(DatasetError) as err:
        fine_tune(run)
    assert "long.jsonl" in str(err.value) and "line 2" in str(err.value) and "line 1" not in str(err.value)
