"""Preference tuning (DPO, docs/dpo.md): TuneForge's loss and adapter gradients equal TRL 1.16's DPOTrainer's
on one batch; the reference is the base model (PEFT's adapter disabled); a `tuneforge train --method dpo`
run writes its metrics and model.json; the preference formats are validated like every format."""

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuneforge import data
from tuneforge.engine.adapters import adapter_parameters, adapters_disabled, apply_ia3, apply_lora
from tuneforge.engine.batches import EncodedPair, collate, encode
from tuneforge.engine.loss import PreferenceLoss, decoder, pair_contexts, pair_logps, sequence_logps
from tuneforge.errors import DatasetError

BETA = 0.3
# fp32 on both sides; the two differ only in summation order (TRL: log_softmax over full logits, a
# masked sum; TuneForge: cross-entropy at the trained positions, an index_add), so loss and gradients
# agree to float32 rounding. Tolerances: 1e-5 relative on the loss, 1e-4 relative (of the largest
# gradient entry) on every adapter gradient.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4

PAIRS = [
    {"prompt": "Is 7 odd?", "chosen": "yes", "rejected": "no, it is even"},
    {"prompt": "Convert the date to ISO 8601: March 5th, 2021", "chosen": "2021-03-05", "rejected": "2021-05-03"},
    {"prompt": "the quick brown fox", "chosen": "jumps over the lazy dog", "rejected": "no"},
]


def pair_lines(path: Path, n: int = 40, seed: int = 0) -> Path:
    """A learnable toy preference task: the right answer to "is N odd?" is preferred over the wrong one."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a = rng.randint(0, 99)
            right, wrong = ("yes", "no") if a % 2 else ("no", "yes")
            f.write(json.dumps({"prompt": f"Is {a} odd?", "chosen": right, "rejected": wrong}) + "\n")
    return path


def load_tiny(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder)


def encoded_pairs(tokenizer) -> list[EncodedPair]:
    items = [
        data.PreferencePair(
            ({"role": "user", "content": p["prompt"]},),
            None,
            {"role": "assistant", "content": p["chosen"], "weight": 1},
            {"role": "assistant", "content": p["rejected"], "weight": 1},
            i + 1,
        )
        for i, p in enumerate(PAIRS)
    ]
    return [encode(tokenizer, item) for item in items]


def random_lora(model, seed: int = 1) -> None:
    """Give every LoRA tensor random values (B too: with PEFT's zero B the policy would equal the reference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def with_random_lora(base):
    """A copy of `base` with a LoRA adapter (r 4, alpha 8, no dropout) of random values (`random_lora`)."""
    model = copy.deepcopy(base)
    apply_lora(model, r=4, alpha=8, dropout=0.0)
    random_lora(model)
    return model


def peft_name(ours: str) -> str:
    # model.layers.0.self_attn.q_proj.lora_A -> base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    return f"base_model.model.{ours}.default.weight"


@pytest.mark.parametrize("share_prefix", [False, True])
def test_loss_and_gradients_equal_trls_dpo_trainer(tiny_llama, tmp_path, share_prefix):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    base, tokenizer = load_tiny(tiny_llama)
    pairs = encoded_pairs(tokenizer)

    ours = with_random_lora(base)
    scorer = PreferenceLoss(ours, BETA)
    scorer.share_prefix = share_prefix
    batch = collate(pairs, tokenizer.pad_token_id)
    stats = scorer(batch, None)
    loss = stats.loss_sum / stats.pairs
    loss.backward()
    our_grads = {n: p.grad for n, p in adapter_parameters(ours).items()}

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), beta=BETA, report_to="none", per_device_train_batch_size=len(PAIRS), use_cpu=True
    )
    # A new adapter through `peft_config`: TRL's reference is then the adapter disabled (a PeftModel passed in
    # would be "re-training an existing adapter", whose reference TRL makes a frozen copy of that adapter).
    text = Dataset.from_list(PAIRS)
    trainer = DPOTrainer(model=copy.deepcopy(base), args=args, train_dataset=text, processing_class=tokenizer, peft_config=config)
    peft_params = dict(trainer.model.named_parameters())
    assert "ref" not in trainer.model.peft_config
    with torch.no_grad():
        for n, p in adapter_parameters(ours).items():
            peft_params[peft_name(n)].copy_(p)
    # The very token ids TuneForge trains on: prompt = the context, chosen/rejected = each trained span.
    rows = [
        {
            "prompt_ids": p.chosen.input_ids[: p.chosen.prompt_len],
            "chosen_ids": p.chosen.input_ids[p.chosen.prompt_len :],
            "rejected_ids": p.rejected.input_ids[p.rejected.prompt_len :],
        }
        for p in pairs
    ]
    assert all(p.chosen.input_ids[: p.chosen.prompt_len] == p.rejected.input_ids[: p.rejected.prompt_len] for p in pairs)
    inputs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    trl_loss.backward()

    assert float(loss) == pytest.approx(float(trl_loss), rel=LOSS_RTOL)
    assert 0.05 < float(loss) < 5  # a real loss: policy and reference differ
    for n, g in our_grads.items():
        theirs = peft_params[peft_name(n)].grad
        scale = float(theirs.abs().max())
        assert scale > 0, n
        assert float((g - theirs).abs().max()) <= GRAD_RTOL * scale, n


@pytest.mark.parametrize("tiny", ["tiny_llama", "tiny_cohere"])
def test_each_pairs_context_run_once_gives_the_whole_rows_logps_and_gradients(tiny, request):
    """pair_logps (a pair's context once, its two replies over that cache, contexts of different lengths
    right-padded in one batch) equals running every row whole, values and adapter gradients."""
    base, tokenizer = load_tiny(request.getfixturevalue(tiny))
    pairs = encoded_pairs(tokenizer)
    batch = collate(pairs, tokenizer.pad_token_id)
    contexts = pair_contexts(batch)
    assert contexts.tolist() == [p.chosen.prompt_len - 1 for p in pairs]  # the whole context but its last token
    assert len(set(contexts.tolist())) == len(pairs)  # different lengths: the contexts' padding is exercised
    model = copy.deepcopy(base)
    if tiny == "tiny_llama":
        apply_lora(model, r=4, alpha=8, dropout=0.0)
    else:
        apply_ia3(model)
    random_lora(model)
    params = adapter_parameters(model)

    whole = sequence_logps(model, batch, 0)
    (whole * torch.arange(1, whole.numel() + 1)).sum().backward()  # a different weight per row
    expected = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad()
    shared = pair_logps(model, batch)
    (shared * torch.arange(1, shared.numel() + 1)).sum().backward()
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-4)
    for n, p in params.items():
        scale = float(expected[n].abs().max())
        assert float((p.grad - expected[n]).abs().max()) <= GRAD_RTOL * max(scale, 1e-12), n


def test_rows_seen_before_skip_the_reference_pass(tiny_llama):
    """The reference is fixed for a run: a batch of rows already scored (next epoch, next evaluation cycle, in
    any batch order) reuses their reference log-probabilities; a new reference adapter forgets them."""
    base, tokenizer = load_tiny(tiny_llama)
    pairs = encoded_pairs(tokenizer)
    model = with_random_lora(base)
    scorer = PreferenceLoss(model, BETA)
    passes = []
    decoder(model).register_forward_hook(lambda *_: passes.append(1))
    with torch.no_grad():
        first = scorer(collate(pairs, tokenizer.pad_token_id))
        computed = len(passes)
        passes.clear()
        again = scorer(collate(pairs[::-1], tokenizer.pad_token_id))
    assert len(passes) == computed // 2  # the policy's passes only
    assert float(again.loss_sum) == pytest.approx(float(first.loss_sum), rel=1e-5)
    assert (again.correct, again.chosen_rewards) == (first.correct, pytest.approx(first.chosen_rewards, rel=1e-5, abs=1e-6))
    assert len(scorer.reference_logps) == 2 * len(pairs)
    scorer.reference_adapter = {n: torch.zeros_like(p) for n, p in adapter_parameters(model).items()}
    assert not scorer.reference_logps


def test_reference_is_the_base_with_peft_adapter_disabled(tiny_llama):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_tiny(tiny_llama)
    batch = collate(encoded_pairs(tokenizer), tokenizer.pad_token_id)
    ours = with_random_lora(base)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        adapted = sequence_logps(ours, batch)
        with adapters_disabled(ours):
            reference = sequence_logps(ours, batch)
        with peft_model.disable_adapter():
            logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    expected = (logps * (labels != -100)).sum(1)
    torch.testing.assert_close(reference, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, reference)  # the context really switched the adapter off, and back on
    with torch.no_grad():
        assert torch.equal(sequence_logps(ours, batch), adapted)


def test_ia3_adapter_off_is_the_base(tiny_cohere):
    base, tokenizer = load_tiny(tiny_cohere)
    batch = collate(encoded_pairs(tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        expected = sequence_logps(base, batch)
        model = copy.deepcopy(base)
        apply_ia3(model)
        for p in adapter_parameters(model).values():
            p.mul_(1.5)
        with adapters_disabled(model):
            torch.testing.assert_close(sequence_logps(model, batch), expected)
        assert not torch.allclose(sequence_logps(model, batch), expected)


def tuneforge(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=300, **kw)


def test_cli_dpo_run_writes_metrics_and_model_json(tiny_llama, tmp_path):
    dataset, out = pair_lines(tmp_path / "pairs.jsonl"), tmp_path / "run"
    args = ["train", "--base-model", "meta.llama-3.3-70b-instruct", "--weights", str(tiny_llama), "--dataset", str(dataset)]
    args += ["--output", str(out), "--precision", "fp32", "--threads", "2", "--json"]
    done = tuneforge(*args, "--method", "dpo", "--beta", "0.5", "--total-training-epochs", "4", "--learning-rate", "0.05")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["trainingConfig"]["trainingConfigType"] == "DPO_TRAINING_CONFIG"
    assert result["trainingConfig"]["beta"] == 0.5 and result["method"] == "LORA"
    assert result["trainingMethod"] == "dpo"
    metrics = result["modelMetrics"]  # the DPO loss and the reward accuracy on the whole validation split
    assert 0 <= metrics["finalAccuracy"] <= 1 and metrics["finalLoss"] > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert {"loss", "rewardsChosen", "rewardsRejected", "rewardMargin", "rewardAccuracy"} <= set(train[0])
    assert train[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # step 1: policy = reference, -log sigmoid(0)
    assert {"validationLoss", "validationRewardAccuracy", "validationRewardMargin"} <= set(evals[-1])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # 40 pairs: 32 train, 8 validation; trainingBatchSize (8) counts pairs
    assert result["totalTrainingSteps"] == 4 * 32 // 8

    # eval scores preference pairs: the DPO metrics against the base, and the base's own preference
    scored = tuneforge(
        "eval",
        "--model",
        str(out),
        "--dataset",
        str(dataset),
        "--split",
        "validation",
        "--json",
        "--compare-base",
        "--precision",
        "fp32",
    )
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    assert scores["model"]["pairs"] == 8 and scores["model"]["beta"] == 0.5
    assert scores["model"]["accuracy"] == pytest.approx(metrics["finalAccuracy"])
    assert scores["model"]["loss"] == pytest.approx(metrics["finalLoss"], rel=1e-4)
    assert scores["base"]["rewardAccuracy"] == 0.0 and 0 <= scores["base"]["preferenceAccuracy"] <= 1

    # a DPO run refuses supervised data, and a supervised run preference data, before loading any weights
    supervised = tmp_path / "sft.jsonl"
    supervised.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(40)))
    refused = tuneforge(*args[:6], str(supervised), "--output", str(tmp_path / "x"), "--method", "dpo")
    assert refused.returncode != 0 and "DPO trains on preference pairs" in refused.stderr
    refused = tuneforge(*args[:6], str(dataset), "--output", str(tmp_path / "y"))
    assert refused.returncode != 0 and "preference pairs train with the DPO method" in refused.stderr


def test_dpo_can_start_from_a_supervised_adapter(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.errors import TuneForgeError
    from tuneforge.hyperparams import resolve_training_config

    model = get_model("meta.llama-3.3-70b-instruct")
    weights = resolve_weights(str(tiny_llama), model_id=model.id, weights_repo=model.weights_repo)
    sft_data = tmp_path / "sft.jsonl"
    sft_data.write_text("".join(json.dumps({"prompt": f"Is {i} odd?", "completion": "yes"}) + "\n" for i in range(40)))
    common = dict(totalTrainingEpochs=1, earlyStoppingPatience=0, learningRate=0.05, loraDropout=0.0)
    sft = RunSpec(model, resolve_training_config(model, common), sft_data, weights, tmp_path / "sft", precision="fp32")
    fine_tune(sft)
    # learning rate 0: the DPO run's adapter stays the one it started from
    config = resolve_training_config(model, {**common, "learningRate": 0.0, "trainingConfigType": "DPO_TRAINING_CONFIG"})
    pairs = pair_lines(tmp_path / "p.jsonl")
    dpo = RunSpec(model, config, pairs, weights, tmp_path / "dpo", precision="fp32", from_adapter=tmp_path / "sft")
    fine_tune(dpo)
    saved = [load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("sft", "dpo")]
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    # the reference is the adapter it started from (pi_ref = pi_SFT, TRL's "ref" copy): policy = reference at step 1
    first = json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kind"] == "train" and first["loss"] == pytest.approx(0.693147, abs=1e-5)

    other = resolve_training_config(model, {**common, "loraR": 16, "trainingConfigType": "DPO_TRAINING_CONFIG"})
    with pytest.raises(TuneForgeError, match="its adapter does not fit this run's"):
        fine_tune(RunSpec(model, other, pairs, weights, tmp_path / "bad", precision="fp32", from_adapter=tmp_path / "sft"))


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def dpo_line(chosen="Hello!", rejected="Go away.", **extra) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
        **extra,
    }


def test_preference_formats_are_read(tmp_path):
    openai = write_lines(tmp_path / "o.jsonl", [dpo_line()])
    (pair,) = data.read_examples(openai, min_examples=1, method=data.DPO)
    assert pair.chosen["content"] == "Hello!" and pair.rejected["content"] == "Go away." and pair.line == 1
    assert data.dataset_format(openai, min_examples=1, method=None) == data.PREFERENCE
    common = write_lines(tmp_path / "c.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert data.dataset_format(common, min_examples=1, method=data.DPO) == data.PROMPT_CHOSEN_REJECTED
    side = data.read_examples(common, min_examples=1, method=data.DPO)[0].side(False)
    assert [m["role"] for m in side.messages] == ["user", "assistant"] and side.trained == [1]


@pytest.mark.parametrize(
    "line, problem",
    [
        (dpo_line(rejected="Hello!"), "line 1: non_preferred_output: is the same reply as preferred_output"),
        (dpo_line(chosen=""), "line 1: preferred_output[0].content: is empty"),
        ({**dpo_line(), "preferred_output": []}, "line 1: preferred_output: must be an array of exactly one assistant message"),
        ({**dpo_line(), "input": {"messages": []}}, "line 1: input.messages: must be a non-empty array"),
        (
            {**dpo_line(), "non_preferred_output": [{"role": "user", "content": "x"}]},
            'line 1: non_preferred_output[0].role: "user" is not allowed',
        ),
        ({"prompt": "p", "chosen": "a", "rejected": " a "}, 'line 1: "rejected" is the same reply as "chosen"'),
        ({"prompt": "p", "chosen": "", "rejected": "b"}, 'line 1: "chosen" is empty'),
        ({"prompt": "p", "rejected": "b"}, 'line 1: missing "chosen"'),
    ],
)
def test_bad_preference_lines_are_named_by_line_and_field(tmp_path, line, problem):
    with pytest.raises(DatasetError) as err:
        data.read_examples(write_lines(tmp_path / "bad.jsonl", [line]), min_examples=1, method=data.DPO)
    assert problem in str(err.value)


def test_every_problem_at_once_and_the_first_valid_line_sets_the_format(tmp_path):
    lines = [dpo_line(), {"prompt": "p", "chosen": "a", "rejected": "b"}, dpo_line(chosen=""), "not json"]
    with pytest.raises(DatasetError) as err:
        data.read_examples(write_lines(tmp_path / "mixed.jsonl", lines), min_examples=1, method=data.DPO)
    text = str(err.value)
    assert "line 2: a prompt/chosen/rejected line in a preference (OpenAI DPO) file" in text
    assert "line 3: preferred_output[0].content: is empty" in text and "line 4: not valid JSON" in text


def test_t_few_trains_with_dpo(tiny_cohere, tmp_path):
    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    model = get_model("cohere.command-r-08-2024")
    weights = resolve_weights(str(tiny_cohere), model_id=model.id, weights_repo=model.weights_repo)
    overrides = dict(trainingConfigType="DPO_TRAINING_CONFIG", totalTrainingEpochs=2, learningRate=0.05, earlyStoppingPatience=0)
    run = RunSpec(model, resolve_training_config(model, overrides), pair_lines(tmp_path / "p.jsonl"), weights, tmp_path / "out")
    run.precision = "fp32"
    result = fine_tune(run)
    assert result.method == "TFEW" and result.training_config["beta"] == 0.1  # the catalog's default
    train = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert train[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # (IA)^3 starts at the identity: policy = reference
    assert train[-1]["rewardMargin"] != 0.0


def test_plan_takes_the_dpo_method_and_its_beta(tmp_path):
    pairs = pair_lines(tmp_path / "pairs.jsonl")
    model = "meta.llama-3.3-70b-instruct"
    done = tuneforge("plan", "--base-model", model, "--dataset", str(pairs), "--method", "dpo", "--beta", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["trainingConfig"]["trainingConfigType"] == "DPO_TRAINING_CONFIG" and plan["trainingConfig"]["beta"] == 0.2
    assert plan["totalTrainingSteps"] == 3 * -(-32 // 8)  # 40 pairs: 32 training, batch 8, 3 epochs
    supervised = tuneforge("plan", "--base-model", model, "--dataset", str(pairs))
    assert supervised.returncode != 0 and "preference pairs train with the DPO method" in supervised.stderr
    sized = tuneforge("plan", "--base-model", model, "--dataset", str(pairs), "--method", "dpo", "--gpus", "8")
    assert sized.returncode != 0 and "--gpus" in sized.stderr and "Traceback" not in sized.stderr
