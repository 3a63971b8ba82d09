"""Every supported architecture (tuneforge/catalog/architectures.py), on a tiny random model of it with
what makes it special switched on (tests/helpers/tiny_models.py: sliding windows the prompts cross,
Gemma 2's soft-caps, QK-norm, Phi-3's fused projections, tied embeddings):

  1. a short run through the real trainer (LoRA; T-Few for Cohere and Cohere2) whose adapter loads in
     plain PEFT with the logits TuneForge computes;
  2. the serving engine's greedy output equals `PeftModel.generate`, for the trained adapter, a random
     PEFT adapter and the base decoding together, with chunked prefill;
  3. a merged export that transformers loads, with PEFT's logits; a GGUF export where the writer knows
     the architecture, a refusal with the reason where it does not;

and the registry's check of config.json dicts."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers.serving import chat, reference_greedy, run_until_done, serving_engine
from helpers.tiny_models import (
    COHERE,
    LLAMA,
    TINY_WINDOW,
    build_model,
    build_tokenizer,
    save_tiny_checkpoint,
    write_parity_dataset,
)

from tuneforge.catalog.architectures import ARCHITECTURES, REFUSED, TFEW, architecture, check_config, supported
from tuneforge.serving import AdapterRef

ARCHS = supported()
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 61, 11, 12, 13, 14, 15, 16, 17, 18]])  # longer than the window


HYPER = {"totalTrainingEpochs": 1, "learningRate": 0.02, "earlyStoppingPatience": 0, "trainingBatchSize": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{arch: (base folder, trained run folder)}, built on first use."""
    root, made = tmp_path_factory.mktemp("arch"), {}
    dataset = write_parity_dataset(root / "parity.jsonl", n=32)

    def get(arch: str):
        if arch not in made:
            from tuneforge.catalog import get_model
            from tuneforge.engine.train import RunSpec, fine_tune
            from tuneforge.engine.weights import resolve_weights
            from tuneforge.hyperparams import resolve_training_config

            base = save_tiny_checkpoint(root / arch, arch, hidden=64)
            model = get_model(COHERE if ARCHITECTURES[arch].method == TFEW else LLAMA)
            hyper = HYPER | ({} if model.method == TFEW else {"loraDropout": 0.0})  # no dropout: ranks draw their own masks
            config = resolve_training_config(model, hyper)
            weights = resolve_weights(str(base), model_id=model.id, weights_repo=model.weights_repo)
            fine_tune(RunSpec(model, config, dataset, weights, output=root / f"{arch}-run", precision="fp32"))
            made[arch] = base, root / f"{arch}-run"
        return made[arch]

    get.dataset = dataset

    return get


def random_adapter(base, out, method: str, seed: int):
    """A PEFT adapter with random non-zero weights on the architecture's own target modules, saved by PEFT."""
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    arch = ARCHITECTURES[model.config.model_type]
    if method == "LORA":
        config = LoraConfig(r=4, lora_alpha=8, target_modules=list(arch.lora_targets), task_type="CAUSAL_LM")
    else:
        config = IA3Config(
            target_modules=list(arch.ia3_targets), feedforward_modules=list(arch.ia3_feedforward), task_type="CAUSAL_LM"
        )
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
        elif "ia3_l" in name:
            p.data = 1 + 0.5 * torch.randn_like(p)
    peft_model.save_pretrained(out)
    return out


@torch.no_grad()
def peft_logits(base, adapter, ids=IDS):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()(ids).logits


@torch.no_grad()
def base_logits(base, ids=IDS):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()(ids).logits


# -- 1. training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_a_short_run_gives_an_adapter_plain_peft_loads_with_equal_logits(arch, tiny):
    from tuneforge.engine.generate import load_trained

    base, run = tiny(arch)
    entry = ARCHITECTURES[arch]
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == ("IA3" if entry.method == TFEW else "LORA")
    targets = entry.ia3_targets if entry.method == TFEW else entry.lora_targets
    assert sorted(config["target_modules"]) == sorted(targets)  # Phi-3: its fused qkv_proj and gate_up_proj
    ours = load_trained(run, device="cpu", precision="fp32").model
    with torch.no_grad():
        got = ours(IDS).logits
    want = peft_logits(base, run / "adapter")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, base_logits(base), atol=1e-3)  # the training moved the model


@pytest.mark.parametrize("arch", ARCHS)
def test_the_losss_head_computes_the_models_own_logits(arch, tiny):
    """The loss runs the decoder body and the LM head apart (loss.py): its head must add what each
    family's head does (Cohere's logit scale, Gemma's final soft-cap)."""
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.loss import decoder, head_logits

    base, _ = tiny(arch)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        got = head_logits(model, decoder(model)(input_ids=IDS).last_hidden_state)
        want = model(IDS).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if arch == "gemma2":
        assert want.abs().max() < model.config.final_logit_softcapping  # the cap is there, and bites


def test_two_ranks_under_fsdp2_train_the_one_process_adapter(tiny, tmp_path):
    """Each decoder layer (and untied embeddings) its own FSDP2 unit (distributed.py), gloo on 2 CPU processes.
    Gemma 2 (tiny: untied): its scaled embeddings are a unit of their own, holding a buffer rebuilt after
    the meta load; eager attention with soft-caps and windows (tests/test_distributed.py covers Llama
    and Cohere's tied T-Few). Tolerance: the ranks sum in another order (and skip the shared-prefix pass),
    fp32 differences that AdamW's first steps amplify where a gradient is near zero: measured 1e-6 to
    6e-4 of a 0.16 maximum, as between one-process runs that differ only in thread count or that order."""
    arch = "gemma2"
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tuneforge.hyperparams import SNAKE_NAMES

    base, run = tiny(arch)
    method = ARCHITECTURES[arch].method
    hyper = HYPER | ({} if method == TFEW else {"loraDropout": 0.0})
    flags = [x for k, v in hyper.items() for x in (f"--{SNAKE_NAMES[k].replace('_', '-')}", str(v))]
    args = ["train", "--base-model", COHERE if method == TFEW else LLAMA, "--dataset", str(tiny.dataset)]
    args += ["--weights", str(base), "--output", str(tmp_path / "out"), "--precision", "fp32", "--nproc-per-node", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # one core per worker on a 2-core machine
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge", *args, *flags], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "model.json").read_text())["distributed"]["worldSize"] == 2
    got, want = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (tmp_path / "out", run))
    assert got.keys() == want.keys()
    assert max((got[k] - want[k]).abs().max().item() for k in got) < 2e-3
    assert max(w.abs().max().item() for w in want.values()) > 0.05  # trained: the comparison means something
    final = (json.loads((r / "model.json").read_text())["modelMetrics"]["finalLoss"] for r in (tmp_path / "out", run))
    assert next(final) == pytest.approx(next(final), rel=1e-3)


# -- 2. serving --------------------------------------------------------------------------------------

PROMPTS = ["the quick brown fox jumps over the lazy dog", "March 5th, 2021", "yes or no?"]


@pytest.mark.parametrize("arch", ARCHS)
def test_serving_greedy_output_equals_peft_generate(arch, tiny, tmp_path):
    base, run = tiny(arch)
    other = "IA3" if ARCHITECTURES[arch].method == TFEW else "LORA"
    adapters = {"trained": run / "adapter", "random": random_adapter(base, tmp_path / "random", other, seed=1), None: None}
    engine = serving_engine(base, start=False, precision="fp32", prefill_tokens=7)  # prompts take several chunks
    jobs = [(name, prompt) for name in adapters for prompt in PROMPTS]
    streams = []
    for i, (name, prompt) in enumerate(jobs):
        ref = None if name is None else AdapterRef(name, adapters[name])
        streams.append(engine.submit(chat(prompt, ref, max_tokens=12)))
        if i % 3 == 2:
            engine.step()  # rows join while others decode
    run_until_done(engine, streams)
    assert engine.stats().peak_running >= 4
    assert len({t for s in streams for t in s.result().token_ids}) > 6  # not a model that repeats one token
    for (name, prompt), stream in zip(jobs, streams):
        expected = reference_greedy(base, adapters[name], prompt, 12)
        got = stream.result()
        assert list(got.token_ids) == expected, (name, prompt)
    # the long prompt and its reply cross the tiny window of the windowed architectures
    assert streams[0].result().prompt_tokens + 12 > 2 * TINY_WINDOW
    engine.shutdown()


@pytest.mark.parametrize("arch,dropped", [("mistral", "sliding_window"), ("gemma2", "softcap")])
def test_serving_without_the_window_or_the_soft_cap_would_not_equal_peft(arch, dropped, tiny, monkeypatch, tmp_path):
    """The parity above is not vacuous: the engine's attention with the window (or Gemma 2's attention
    soft-cap) ignored gives another reply than PEFT for the long prompt."""
    from transformers import AttentionInterface

    from tuneforge.serving import kv_cache

    base, _ = tiny(arch)
    adapter = random_adapter(base, tmp_path / "random", "LORA", seed=1)
    engine = serving_engine(base, start=False, precision="fp32")

    def careless(*args, **kwargs):
        kwargs.pop(dropped, None)
        return kv_cache.attention(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, kv_cache.ATTENTION, careless)
    prompt = "the quick brown fox jumps over the lazy dog 0123456789 " * 2
    stream = engine.submit(chat(prompt, AdapterRef("random", adapter), max_tokens=12))
    run_until_done(engine, [stream])
    assert list(stream.result().token_ids) != reference_greedy(base, adapter, prompt, 12)
    engine.shutdown()


# -- 3. export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_export_loads_in_transformers_with_peft_logits(arch, tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.serving.export import export_merged

    base, run = tiny(arch)
    out = export_merged(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert merged.config.model_type == arch
    with torch.no_grad():
        got = merged(IDS).logits
    torch.testing.assert_close(got, peft_logits(base, run / "adapter"), rtol=1e-4, atol=1e-4)
    if merged.config.tie_word_embeddings:
        assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight


@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_export_is_written_or_refused_with_the_reason(arch, tiny, tmp_path):
    from tuneforge.serving.export import ExportError, export_gguf

    _, run = tiny(arch)
    entry = ARCHITECTURES[arch]
    target = tmp_path / "model.gguf"
    if entry.gguf is None or arch in ("qwen2", "qwen3"):  # the tiny Qwens use a window, which llama.cpp's do not
        with pytest.raises(ExportError, match="convert_hf_to_gguf" if entry.gguf is None else "sliding window") as err:
            export_gguf(run, target)
        assert entry.name in str(err.value)
        assert not any(tmp_path.iterdir())  # nothing half-written
        return
    import gguf

    export_gguf(run, target)
    reader = gguf.GGUFReader(target)
    assert reader.fields["general.architecture"].contents() == entry.gguf


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_a_qwen_without_a_window_is_written_as_llama_cpps_qwen_and_reads_back(arch, tmp_path):
    """Released Qwen2.5/Qwen3 checkpoints use no sliding window: the tiny Qwens without it (Qwen2 tied, with
    q/k/v biases; Qwen3 with QK-norm) written as GGUF and read back by transformers' own GGUF loader."""
    from transformers import AutoModelForCausalLM

    from tuneforge.serving.gguf_writer import write_gguf

    config = build_model(arch, hidden=64).config
    config.use_sliding_window = False
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    if arch == "qwen3":
        config.head_dim = 128  # transformers' GGUF reader takes Qwen3's default, not the file's key_length
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    with torch.no_grad():  # the biases are zero at init: make them count
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    write_gguf(model.eval(), tokenizer, tmp_path, tmp_path / "model.gguf", "f16", name="tiny")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    assert loaded.config.model_type == arch
    with torch.no_grad():
        got, want = loaded(IDS).logits, model(IDS).logits
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()


# -- the registry --------------------------------------------------------------------------------------


def test_the_registry_covers_the_families_of_the_issue_with_their_methods():
    assert set(ARCHS) >= {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "cohere", "cohere2"}
    assert {a for a in ARCHS if ARCHITECTURES[a].method == TFEW} == {"cohere", "cohere2"}
    assert all(ARCHITECTURES[a].method == "LORA" for a in ARCHS if a not in ("cohere", "cohere2"))
    assert architecture("gemma3") is None and "gemma3" in REFUSED


@pytest.mark.parametrize("arch", ARCHS)
def test_each_entry_names_the_models_class_and_linear_layers(arch):
    from torch import nn

    model = build_model(arch, hidden=64)
    entry = ARCHITECTURES[arch]
    assert type(model).__name__ == entry.causal_lm
    layer = dict(model.model.layers[0].named_modules())
    linears = {name.rpartition(".")[2] for name, m in layer.items() if isinstance(m, nn.Linear)}
    assert linears == set(entry.lora_targets)  # every linear layer of a block, nothing else
    assert set(entry.ia3_targets) <= linears and set(entry.ia3_feedforward) <= set(entry.ia3_targets)
    assert check_config(model.config.to_dict()) == []
    assert entry.features and all(what and how for what, how in entry.features)


GOOD = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
}


def test_check_config_names_every_problem_at_once():
    assert check_config(GOOD) == []
    broken = {k: v for k, v in GOOD.items() if k != "vocab_size"} | {
        "num_key_value_heads": 3,
        "hidden_size": 900,
        "quantization_config": {"quant_method": "awq"},
        "architectures": ["Qwen2ForSequenceClassification"],
        "sliding_window": -1,
    }
    problems = check_config(broken)
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    for needle in ("no vocab_size", "num_key_value_heads 3", "hidden_size 900", "'awq'", "Qwen2ForCausalLM", "sliding_window -1"):
        assert needle in text


@pytest.mark.parametrize(
    "model_type,reason",
    [("gemma3", "vision-language"), ("mixtral", "mixture of experts"), ("bert", None), (None, "no model_type")],
)
def test_an_unsupported_architecture_is_refused_with_the_supported_list(model_type, reason):
    config = {"model_type": model_type} if model_type else {}
    (problem,) = check_config(config)
    assert "llama (Llama)" in problem and "cohere2" in problem  # the supported list
    if reason:
        assert reason in problem
    if model_type:
        assert f"architecture {model_type!r} is not supported" in problem


def test_loading_refuses_a_gemma3_multimodal_folder_with_the_reason(tmp_path):
    from tuneforge.engine.weights import Weights, load_model_and_tokenizer
    from tuneforge.errors import WeightsError

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]})
    )
    with pytest.raises(WeightsError, match="Gemma3ForCausalLM, model_type gemma3_text"):
        load_model_and_tokenizer(Weights(str(tmp_path), tmp_path, False, "x"), torch.float32, "cpu")
