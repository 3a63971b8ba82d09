"""Read and write adapters in PEFT's on-disk format (adapter_config.json + adapter_model.safetensors),
so a TuneForge adapter loads with plain `PeftModel.from_pretrained` and PEFT adapters load here."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuneforge.engine.adapters import (
    ADAPTER_TENSORS,
    IA3_FEEDFORWARD,
    IA3_TARGETS,
    LORA_TARGETS,
    adapter_parameters,
    apply_ia3,
    apply_lora,
)

PREFIX = "base_model.model."  # PEFT's wrapper path in front of the transformers module names


def _peft_key(param_name: str) -> str:
    # LoRA: ...q_proj.lora_A -> ...q_proj.lora_A.weight (PEFT keeps A and B as nn.Linear);
    # (IA)^3: ...k_proj.ia3_l stays as is (PEFT keeps it as a bare parameter).
    return PREFIX + param_name + (".weight" if param_name.endswith((".lora_A", ".lora_B")) else "")


def _our_name(peft_key: str) -> str:
    name = peft_key.removeprefix(PREFIX)
    return name.removesuffix(".weight") if name.endswith((".lora_A.weight", ".lora_B.weight")) else name


def peft_config(method: str, *, base_model: str, r: int | None = None, alpha: int | None = None, dropout: float | None = None):
    from peft import IA3Config, LoraConfig

    if method == "LORA":
        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(LORA_TARGETS),
            task_type="CAUSAL_LM",
            base_model_name_or_path=base_model,
        )
    return IA3Config(
        target_modules=list(IA3_TARGETS),
        feedforward_modules=list(IA3_FEEDFORWARD),
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


def save_adapter(adapter: dict[str, torch.Tensor], directory: Path, config) -> None:
    """`adapter`: the trainable tensors by parameter name (`adapter_parameters`), whole (not sharded).
    The config's target modules become the ones the adapter really wraps: they differ by architecture
    (Phi-3's fused qkv_proj and gate_up_proj), and PEFT must wrap the same ones to load its tensors."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = _wrapped_modules(adapter)
    if targets:
        config.target_modules = targets
        if getattr(config, "feedforward_modules", None) is not None:
            config.feedforward_modules = targets & set(IA3_FEEDFORWARD)
    tensors = {_peft_key(n): p.detach().to("cpu", torch.float32).contiguous() for n, p in adapter.items()}
    weights = directory / "adapter_model.safetensors"
    save_file(tensors, weights, metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    # safetensors writes through a private temporary file (0600); give the weights the mode the config
    # file got from the user's umask, so a run folder shared with a group is readable whole.
    weights.chmod(stat.S_IMODE((directory / "adapter_config.json").stat().st_mode))


def _wrapped_modules(adapter: dict[str, torch.Tensor]) -> set[str]:
    """The last names of the modules holding the adapter's tensors (...self_attn.qkv_proj.lora_A -> qkv_proj)."""
    names = set()
    for name in adapter:
        parts = name.split(".")
        at = next((i for i, part in enumerate(parts) if part in ADAPTER_TENSORS), 0)
        if at:
            names.add(parts[at - 1])
    return names


def load_adapter(model: nn.Module, directory: Path) -> str:
    """Inject the adapter stored in `directory` into `model` (our modules). Returns the method."""
    config = json.loads((directory / "adapter_config.json").read_text())
    kind = config.get("peft_type")
    # the modules it names (a list; PEFT also allows a regex string, then the architecture's own)
    targets = config.get("target_modules")
    targets = tuple(targets) if isinstance(targets, list) else None
    if kind == "LORA":
        apply_lora(model, config["r"], config["lora_alpha"], 0.0, targets)
    elif kind == "IA3":
        feedforward = config.get("feedforward_modules")
        apply_ia3(model, targets, tuple(feedforward) if isinstance(feedforward, list) and targets else None)
    else:
        raise ValueError(f"unsupported adapter type {kind!r} in {directory}")
    params = adapter_parameters(model)
    for key, tensor in load_file(directory / "adapter_model.safetensors").items():
        params[_our_name(key)].data.copy_(tensor)
    return "LORA" if kind == "LORA" else "TFEW"
