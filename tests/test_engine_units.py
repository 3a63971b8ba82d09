"""Engine pieces in isolation: early stopping, logging schedule, LR schedule, evaluation plan,
prompt masking, completion-only loss against the full forward pass."""

import itertools
import math

import pytest
import torch

from tuneforge.engine import loss as loss_mod
from tuneforge.engine.batches import IGNORE, collate, encode_example
from tuneforge.engine.early_stopping import EarlyStopping
from tuneforge.engine.metrics_log import should_log
from tuneforge.engine.train import EvalPlan, epoch_order, lr_at


def run_stopper(patience, threshold, losses):
    s = EarlyStopping(patience, threshold)
    history = []
    for i, loss in enumerate(losses):
        s.update(loss)
        history.append(s.counter)
        if s.should_stop:
            return i, history
    return None, history


def test_patience_zero_never_stops():
    assert run_stopper(0, 0.0, [1.0] * 50)[0] is None


def test_patience_one_stops_at_first_non_improvement():
    assert run_stopper(1, 0.0, [3.0, 2.0, 2.5, 1.0])[0] == 2


def test_patience_n_counts_consecutive_non_improvements_and_resets():
    stop, counters = run_stopper(3, 0.0, [3.0, 3.1, 3.2, 2.0, 2.1, 2.2, 2.3, 0.5])
    assert counters == [0, 1, 2, 0, 1, 2, 3]
    assert stop == 6


def test_threshold_edge_is_strict_and_absolute():
    # improvement of exactly the threshold does not count; a larger one does
    s = EarlyStopping(patience=5, threshold=0.5)
    s.update(2.0)
    s.update(1.5)  # 0.5 better: not more than the threshold
    assert s.counter == 1
    s.update(0.75)  # 0.75 better than the best (1.5): counts
    assert s.counter == 0


def test_sub_threshold_improvement_moves_best_but_not_counter():
    s = EarlyStopping(patience=5, threshold=0.1)
    s.update(1.0)
    assert s.update(0.95) is True  # new best adapter kept
    assert s.counter == 1 and s.best == 0.95


def test_logging_schedule_every_step_for_20_then_interval():
    logged = [s for s in range(1, 101) if should_log(s, 10)]
    assert logged == list(range(1, 21)) + [30, 40, 50, 60, 70, 80, 90, 100]
    assert [s for s in range(1, 30) if should_log(s, 1)] == list(range(1, 30))
    assert not any(should_log(s, 0) for s in range(1, 100))


def test_lr_warmup_then_linear_decay_to_zero():
    total, peak = 100, 1e-3
    lrs = [lr_at(s, total, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / 6) and lrs[5] == pytest.approx(peak)  # 6 warmup steps
    assert all(a >= b for a, b in itertools.pairwise(lrs[5:]))
    assert lrs[-1] == pytest.approx(peak / 94)


@pytest.mark.parametrize("patience,epochs,n_train", [(15, 3, 800), (10, 1, 800), (15, 3, 4000), (10, 1, 4000)])
def test_eval_plan_gives_early_stopping_room_and_bounded_cost(patience, epochs, n_train):
    batch = 8 if epochs == 3 else 16
    total = epochs * math.ceil(n_train / batch)
    plan = EvalPlan.make(total, patience, n_train, epochs, n_val=n_train // 4)
    cycles = sum(plan.due(s, total) for s in range(1, total + 1))
    assert cycles > patience + 1  # early stopping can fire well inside the default run
    assert cycles * plan.examples <= 0.5 * n_train * epochs  # evaluation work stays a fraction of training


def test_epoch_order_is_seeded_and_differs_per_epoch():
    assert epoch_order(50, 1, 0) == epoch_order(50, 1, 0)
    assert epoch_order(50, 1, 0) != epoch_order(50, 1, 1)
    assert sorted(epoch_order(50, 1, 3)) == list(range(50))


def test_prompt_tokens_are_masked_and_completion_ends_with_eos(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    e = encode_example(tok, "Is 3 odd?", "yes")
    assert tok.decode(e.input_ids[e.prompt_len :]) == "yes<|im_end|>"
    assert tok.decode(e.input_ids[: e.prompt_len]).endswith("<|im_start|>assistant\n")
    batch = collate([e, encode_example(tok, "Is 10 odd? Tell me.", "no")], tok.pad_token_id)
    labels = batch["labels"][0]
    assert (labels[: e.prompt_len] == IGNORE).all() and (labels[e.prompt_len : len(e.input_ids)] != IGNORE).all()
    assert (labels[len(e.input_ids) :] == IGNORE).all()


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_cohere"])
def test_completion_loss_matches_full_forward_and_chunking_keeps_gradients(arch, request, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    batch = collate([encode_example(tok, f"Is {i} odd?", "yes" if i % 2 else "no") for i in range(6)], tok.pad_token_id)

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    ref = torch.nn.functional.cross_entropy(logits[where].float(), targets[where], reduction="sum")
    ref_acc = int((logits[where].argmax(-1) == targets[where]).sum())
    ref.backward()
    ref_grad = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()

    for rows in (2048, 3):  # one chunk, then many checkpointed chunks of 3 completion positions
        monkeypatch.setattr(loss_mod, "CHUNK_LOGITS", rows * model.config.vocab_size)
        stats = loss_mod.completion_stats(model, batch)
        assert torch.allclose(stats.loss_sum, ref, rtol=1e-5)
        assert stats.correct == ref_acc and stats.tokens == int(where.sum())
        stats.loss_sum.backward()
        assert torch.allclose(model.model.embed_tokens.weight.grad, ref_grad, atol=1e-5)
        model.zero_grad()


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_cohere"])
def test_shared_prefix_pass_gives_the_same_loss_and_gradients(arch, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.adapters import adapter_parameters, apply_lora

    path = request.getfixturevalue(arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    apply_lora(model, 4, 8, 0.0)
    for p in adapter_parameters(model).values():
        torch.nn.init.normal_(p, std=0.1)  # nonzero B so the adapter shapes the prefix keys/values too
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [f"Answer with yes or no only, please: is the number {i} odd?" for i in (3, 10, 21, 8)]
    batch = collate([encode_example(tok, p, "yes") for p in prompts], tok.pad_token_id)
    assert loss_mod.shared_prefix_len(batch) >= loss_mod.MIN_SHARED_PREFIX

    results = []
    for share in (False, True):
        stats = loss_mod.completion_stats(model, batch, share_prefix=share)
        stats.loss_sum.backward()
        grads = {n: p.grad.clone() for n, p in adapter_parameters(model).items()}
        model.zero_grad()
        results.append((stats, grads))
    (plain, g_plain), (shared, g_shared) = results
    assert torch.allclose(plain.loss_sum, shared.loss_sum, rtol=1e-5)
    assert plain.correct == shared.correct and plain.tokens == shared.tokens
    assert all(torch.allclose(g_plain[n], g_shared[n], atol=1e-5, rtol=1e-4) for n in g_plain)


def test_shared_prefix_stops_before_the_first_completion_token():
    ids = torch.tensor([[1] * 12 + [5, 6], [1] * 12 + [5, 7]])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 10:] = ids[0, 10:]  # row 0's completion starts at position 10
    labels[1, 13:] = ids[1, 13:]
    batch = {"input_ids": ids, "labels": labels}
    assert loss_mod.shared_prefix_len(batch) == 9  # the hidden state at 9 predicts position 10: per-row


def test_dropout_keep_mask_keeps_the_expectation():
    from tuneforge.engine.adapters import dropout_keep_mask

    torch.manual_seed(0)
    x = torch.ones(400, 500)
    keep, scale = dropout_keep_mask(x.shape, 0.1, x.device)
    y = x * keep * scale
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(65536 / (65536 - 6554))]


@pytest.mark.parametrize("mm_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_lora_function_matches_autograd_over_the_plain_expression(mm_dtype, with_dropout, with_bias):
    """The hand-written LoRA backward gives the loss and gradients of autograd over
    y = x W^T + b + s ((x * keep) A^T) B^T, with the products in W's dtype and the sum in x's."""
    from tuneforge.engine.adapters import LoRALinear, dropout_keep_mask

    torch.manual_seed(0)
    base = torch.nn.Linear(24, 40, bias=with_bias).to(mm_dtype).requires_grad_(False)
    layer = LoRALinear(base, r=4, alpha=8, dropout=0.2 if with_dropout else 0.0).train()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5, 24, requires_grad=True)
    target = torch.randn(3, 5, 40)

    torch.manual_seed(1)
    ((layer(x) - target) ** 2).sum().backward()
    ours = [x.grad.clone(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()]
    x.grad = layer.lora_A.grad = layer.lora_B.grad = None

    torch.manual_seed(1)  # the same dropout mask
    keep, scale = dropout_keep_mask(x.shape, 0.2, x.device) if with_dropout else (torch.ones_like(x, dtype=torch.bool), 1.0)
    xm = x.to(mm_dtype)
    delta = ((xm * keep) @ layer.lora_A.to(mm_dtype).t()) * (layer.scaling * scale) @ layer.lora_B.to(mm_dtype).t()
    plain = (xm @ base.weight.t()).float() + delta.float() + (base.bias.float() if with_bias else 0)
    ((plain - target) ** 2).sum().backward()
    reference = [x.grad, layer.lora_A.grad, layer.lora_B.grad]

    # bf16: both sides round products to 8 bits, at different points; judge against the gradient's scale.
    tol = 1e-5 if mm_dtype == torch.float32 else 2e-2
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=tol * want.abs().max().item())


def test_bf16_matmuls_keep_the_model_fp32_and_close_to_it(tiny_llama):
    """Mixed precision swaps only the linear layers: norms, embeddings and the residual stream stay
    fp32, and the logits stay within bf16 rounding of the fp32 model's."""
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.precision import Bf16Linear, use_bf16_matmuls

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    mixed = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    swapped = use_bf16_matmuls(mixed)
    assert swapped == 7 * model.config.num_hidden_layers + 1  # seven projections a layer and the LM head
    assert all(isinstance(m, Bf16Linear) for m in mixed.modules() if isinstance(m, torch.nn.Linear))
    assert mixed.model.embed_tokens.weight.dtype == torch.float32
    assert mixed.model.norm.weight.dtype == torch.float32
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(ids).logits, mixed(ids).logits
    assert got.dtype == torch.float32
    # ~1.5 % on this tiny model (its 0.3-scale weights amplify rounding); a wrong weight would be ~100 %.
    assert (got - want).norm() < 0.04 * want.norm()


def test_a_bf16_checkpoint_loads_as_the_same_mixed_model_without_an_fp32_pass(tiny_llama, tmp_path, monkeypatch):
    """Real checkpoints are bf16. Read in their own dtype, they give exactly the mixed model an fp32
    read would (bf16 linears, fp32 embeddings/norms/buffers), and no linear weight is ever fp32."""
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.precision import Bf16Linear, use_bf16_matmuls
    from tuneforge.engine.weights import Weights, load_model_and_tokenizer

    bf16_dir = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).save_pretrained(bf16_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (bf16_dir / name).write_bytes((tiny_llama / name).read_bytes())

    reference = AutoModelForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32)
    use_bf16_matmuls(reference)
    read_as = []
    real_from_pretrained = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        loaded = real_from_pretrained(*args, **kwargs)
        read_as.append(loaded.model.layers[0].mlp.up_proj.weight.dtype)
        return loaded

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model, _ = load_model_and_tokenizer(Weights(str(bf16_dir), bf16_dir, False, "bf16 tiny"), torch.bfloat16, "cpu")

    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert p.dtype == theirs[name].dtype and torch.equal(p, theirs[name]), name
    for (name, b), (_, r) in zip(model.named_buffers(), reference.named_buffers()):
        assert b.dtype == torch.float32 and torch.equal(b, r), name
    assert read_as == [torch.bfloat16]  # the checkpoint was never expanded to fp32
    assert all(isinstance(m, Bf16Linear) for m in model.modules() if isinstance(m, torch.nn.Linear))
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)

    fp32_model, _ = load_model_and_tokenizer(Weights(str(bf16_dir), bf16_dir, False, "bf16 tiny"), torch.float32, "cpu")
    assert {p.dtype for p in fp32_model.parameters()} == {torch.float32}
