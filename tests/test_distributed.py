"""Distributed training on CPU (gloo, 2 real processes, tiny models): the adapter after N steps equals the
one-process run's, for LoRA (from scratch, on two one-rank "machines" with activation checkpointing) and
T-Few (resumed from a one-process checkpoint on 2 ranks), with uneven rank shares and micro-batches;
SIGTERM to the launcher checkpoints (exit 3) and one process resumes to the same adapter (2 -> 1).

Tolerance: fp32 on both sides, so the ranks' partial sums differ from one process's only in summation
order; after 20 AdamW steps the adapters agree to ~1e-6 (measured 2e-6 of a 0.4 maximum); we assert 1e-4."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.catalog import get_model
from tuneforge.engine.launch import combined_exit_code, free_port
from tuneforge.engine.train import RunSpec, TrainingStopped, fine_tune
from tuneforge.engine.weights import resolve_weights
from tuneforge.hyperparams import resolve_training_config

LLAMA, COHERE = "meta.llama-3.3-70b-instruct", "cohere.command-r-08-2024"
# 38 training examples in batches of 9: ranks get 5 and 4 of a batch (4 + 1 and 4 with micro-batches of 4:
# the second rank runs a zero-weighted padding pass), the last batch of an epoch 1 and 1.
LORA = {"totalTrainingEpochs": 4, "trainingBatchSize": 9, "learningRate": 0.05, "loraDropout": 0.0, "earlyStoppingPatience": 2}
TFEW = {"totalTrainingEpochs": 3, "trainingBatchSize": 9, "learningRate": 0.05, "earlyStoppingPatience": 2}
ATOL = 1e-4


def flags(hyperparameters: dict) -> list[str]:
    from tuneforge.hyperparams import SNAKE_NAMES

    return [x for k, v in hyperparameters.items() for x in (f"--{SNAKE_NAMES[k].replace('_', '-')}", str(v))]


def train_args(model_id, weights, dataset, output, hyperparameters, *extra) -> list[str]:
    return [
        "train",
        "--base-model",
        model_id,
        "--dataset",
        str(dataset),
        "--weights",
        str(weights),
        "--output",
        str(output),
        "--precision",
        "fp32",
        *flags(hyperparameters),
        *map(str, extra),
    ]


# One thread a worker, as the launcher gives each of two workers on this 2-core machine (two one-process
# "machines" would otherwise take every core each).
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def tuneforge(*args):
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=300, env=ENV)


def one_process(model_id, weights, dataset, output, hyperparameters, **kw):
    model = get_model(model_id)
    run = RunSpec(
        base_model=model,
        config=resolve_training_config(model, hyperparameters),
        dataset=dataset,
        weights=resolve_weights(str(weights), model_id=model.id, weights_repo=model.weights_repo),
        output=output,
        precision="fp32",
        micro_batch_size=4,
        **kw,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two workers runs (the launcher gives each core/2 threads)
    try:
        return fine_tune(run)
    finally:
        torch.set_num_threads(threads)


def adapter(output):
    return load_file(output / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(got, want):
    a, b = adapter(got), adapter(want)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < ATOL, f"adapters differ by {worst}"
    assert max(b[k].abs().max().item() for k in b) > 100 * ATOL  # trained: the comparison means something


def eval_losses(output):
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [r["validationLoss"] for r in map(json.loads, lines) if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from helpers.tiny_models import save_tiny_checkpoint, write_parity_dataset

    root = tmp_path_factory.mktemp("dist")
    return {
        "llama": save_tiny_checkpoint(root / "llama", "llama"),
        "dataset": write_parity_dataset(root / "parity.jsonl"),
        "root": root,
    }


@pytest.fixture(scope="module")
def lora_reference(data):
    """The one-process run every LoRA test compares with."""
    out = data["root"] / "lora-1"
    result = one_process(LLAMA, data["llama"], data["dataset"], out, LORA)
    assert result.steps_run == 20
    return out


def test_two_machines_of_one_rank_train_the_one_process_lora(data, lora_reference, tmp_path):
    """`--nnodes 2`: two launchers (node ranks 0 and 1) on loopback, with activation checkpointing."""
    out, port = tmp_path / "lora-2", free_port()
    args = train_args(
        LLAMA,
        data["llama"],
        data["dataset"],
        out,
        LORA,
        "--micro-batch-size",
        4,
        "--activation-checkpointing",
        "--nproc-per-node",
        1,
        "--nnodes",
        2,
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        port,
    )
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "tuneforge", *args, "--node-rank", r, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for r in ("0", "1")
    ]
    (out0, err0), (out1, err1) = (p.communicate(timeout=300) for p in nodes)
    assert [p.returncode for p in nodes] == [0, 0], err0[-3000:] + err1[-3000:]
    result = json.loads(out0)
    assert out1 == ""  # only rank 0 speaks
    assert result["distributed"] == {"worldSize": 2, "sharding": "fsdp2"} and result["activationCheckpointing"] is True
    assert result["stepsRun"] == 20
    assert_same_adapter(out, lora_reference)
    assert eval_losses(out) == pytest.approx(eval_losses(lora_reference), rel=1e-5)
    want = json.loads((lora_reference / "model.json").read_text())["modelMetrics"]
    assert result["modelMetrics"]["finalLoss"] == pytest.approx(want["finalLoss"], rel=1e-5)
    assert result["modelMetrics"]["finalAccuracy"] == want["finalAccuracy"]


def test_sigterm_to_the_launcher_checkpoints_and_one_process_resumes_to_the_same_adapter(data, lora_reference, tmp_path):
    out = tmp_path / "lora-stopped"
    args = train_args(LLAMA, data["llama"], data["dataset"], out, LORA, "--micro-batch-size", 4, "--nproc-per-node", 2)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and launcher.poll() is None:  # poll progress.json until training is under way
        progress = out / "progress.json"
        if progress.is_file() and json.loads(progress.read_text() or "{}").get("step", 0) >= 2:
            break
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=240)
    assert launcher.returncode == 3, stderr[-3000:]
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "model.json").exists()
    stopped_at = json.loads((out / "progress.json").read_text())["step"]
    assert 2 <= stopped_at < 20

    resumed = one_process(LLAMA, data["llama"], data["dataset"], out, LORA, resume=True)  # 2 ranks -> 1
    assert resumed.steps_run == 20 and resumed.extra["distributed"]["worldSize"] == 1
    assert_same_adapter(out, lora_reference)
    assert eval_losses(out) == pytest.approx(eval_losses(lora_reference), rel=1e-5)


def test_a_one_process_tfew_checkpoint_resumes_on_two_ranks_to_the_one_process_adapter(data, tmp_path):
    weights = data["llama"]  # (IA)^3 on the tiny Llama: the method, not the architecture, is under test here
    want = tmp_path / "tfew-1"
    one_process(COHERE, weights, data["dataset"], want, TFEW)
    out = tmp_path / "tfew-1-then-2"
    asked = threading.Event()
    listener = [lambda r: r["kind"] == "train" and r["step"] == 4 and asked.set()]
    with pytest.raises(TrainingStopped):
        one_process(COHERE, weights, data["dataset"], out, TFEW, listeners=listener, should_stop=asked.is_set)
    proc = tuneforge(
        *train_args(
            COHERE, weights, data["dataset"], out, TFEW, "--micro-batch-size", 4, "--nproc-per-node", 2, "--resume", "--json"
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["stepsRun"] == 15
    assert_same_adapter(out, want)
    assert eval_losses(out) == pytest.approx(eval_losses(want), rel=1e-5)
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [
        r["step"] for r in map(json.loads, (want / "metrics.jsonl").read_text().splitlines())
    ]


def test_workers_exit_codes_combine_as_the_run_folder_contract_says():
    assert combined_exit_code([0, 0]) == 0
    assert combined_exit_code([3, 3]) == combined_exit_code([0, 3]) == 3
    assert combined_exit_code([3, 1]) == 1 and combined_exit_code([2, 2]) == 2 and combined_exit_code([0, -9]) == 1


@pytest.mark.parametrize("arch", ["llama", "cohere"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_reads_a_sharded_checkpoint_into_the_model_inference_loads(arch, dtype, tmp_path):
    """load_for_training (meta device, then each tensor read into place) against from_pretrained, on a
    checkpoint written as several safetensors shards with an index, as large models are published."""
    from helpers.tiny_models import save_tiny_checkpoint
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.distributed import Distributed
    from tuneforge.engine.loss import CompletionLoss
    from tuneforge.engine.weights import Weights, load_for_training, load_model_and_tokenizer

    folder = save_tiny_checkpoint(tmp_path / "one", arch)
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    for f in folder.glob("tokenizer*"):
        (tmp_path / "sharded" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "sharded" / "chat_template.jinja").write_bytes((folder / "chat_template.jinja").read_bytes())
    weights = Weights("sharded", tmp_path / "sharded", False, "sharded")
    assert len(list(weights.path.glob("*.safetensors"))) > 3 and (weights.path / "model.safetensors.index.json").is_file()

    scorer, _ = load_for_training(weights, dtype, Distributed(), CompletionLoss)
    ours = scorer.model
    theirs, _ = load_model_and_tokenizer(weights, dtype, "cpu")
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert p.dtype == q.dtype and torch.equal(p, q), name
    for (name, b), c in zip(ours.named_buffers(), theirs.buffers(), strict=True):
        assert torch.equal(b, c), name
    ids = torch.tensor([[1, 5, 9, 33, 2, 70, 12]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)


def test_a_tensor_missing_from_the_checkpoint_is_named(tmp_path):
    from helpers.tiny_models import save_tiny_checkpoint

    from tuneforge.engine.distributed import Distributed
    from tuneforge.engine.loss import CompletionLoss
    from tuneforge.engine.weights import Weights, load_for_training
    from tuneforge.errors import WeightsError

    folder = save_tiny_checkpoint(tmp_path / "m", "llama")
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"the checkpoint has no tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        load_for_training(Weights("m", folder, False, "m"), torch.float32, Distributed(), CompletionLoss)
