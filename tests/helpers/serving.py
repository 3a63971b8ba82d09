"""Serving engines on the tiny models, PEFT adapters with random weights, and what PEFT (or plain
transformers) generates greedily: the reference every engine output is compared with."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def random_peft_adapter(base_dir: Path, out_dir: Path, method: str, seed: int, r: int = 4) -> Path:
    """A PEFT adapter with random non-zero weights, saved by PEFT itself (save_pretrained)."""
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.engine.adapters import IA3_FEEDFORWARD, IA3_TARGETS, LORA_TARGETS

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if method == "LORA":
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    else:
        config = IA3Config(target_modules=list(IA3_TARGETS), feedforward_modules=list(IA3_FEEDFORWARD), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
        elif "ia3_l" in name:
            p.data = 1 + 0.5 * torch.randn_like(p)
    peft_model.save_pretrained(out_dir)
    return out_dir


def base_dir(arch: str, tiny_llama: Path, tiny_cohere: Path) -> Path:
    return tiny_llama if arch == "llama" else tiny_cohere


@functools.cache
def _reference_model(base: Path, adapter: Path | None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    return model, AutoTokenizer.from_pretrained(base)


@torch.no_grad()
def reference_greedy(base: Path, adapter: Path | None, prompt: str | list[dict], max_new_tokens: int) -> list[int]:
    """What PEFT (or plain transformers for the base) generates greedily for one prompt (or conversation)."""
    from tuneforge.engine.batches import encode_prompt

    model, tokenizer = _reference_model(Path(base), None if adapter is None else Path(adapter))
    if isinstance(prompt, str):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
    else:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def serving_engine(base: Path, start: bool = True, **config):
    from tuneforge.engine.weights import Weights
    from tuneforge.serving.engine import Engine, EngineConfig

    # fp32 unless a test asks otherwise: "auto" picks bf16 matmuls on CPUs with AVX512-BF16/AMX, and
    # greedy parity with fp32 PEFT would then hang on near-ties of the tiny random models.
    config.setdefault("precision", "fp32")
    return Engine(Weights(str(base), base, False, base.name), EngineConfig(device="cpu", **config), start=start)


def chat(prompt: str, adapter=None, **kw):
    from tuneforge.serving import Request

    return Request(messages=[{"role": "user", "content": prompt}], adapter=adapter, **kw)


def run_until_done(engine, streams, max_steps: int = 10_000) -> None:
    """Drive an engine made with start=False until every stream has ended."""
    for _ in range(max_steps):
        if all(s.done for s in streams):
            return
        engine.step()
    raise AssertionError("the engine did not finish its requests")
