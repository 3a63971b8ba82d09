"""The two fine-tuning methods as small modules wrapped around frozen `nn.Linear` layers.

LoRA (Hu et al. 2021):    y = W x + (alpha / r) * B A dropout(x)          A: r x in, B: out x r, B = 0 at init
T-Few / (IA)^3 (Liu et al. 2022, section 3.3):
    keys/values:          y = l * (W x)                                   l: out, ones at init
    feed-forward:         y = W (l * x)   on down_proj, whose input is act(gate x) * (up x),
                          i.e. the intermediate activation the paper rescales (l_ff)

Why our own modules rather than PEFT's layers: the frozen base runs in bf16 on this CPU (5x the
fp32 matmul rate) while the adapter weights stay fp32 masters for AdamW; PEFT upcasts every
activation to the adapter dtype, which costs more than the adapter itself. The parameter names and
shapes follow PEFT's exactly, and `peft_format.py` writes/reads PEFT's on-disk format, so the result
loads with plain `PeftModel.from_pretrained` (tested for identical logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.errors import TuneForgeError

# All linear layers of the decoder blocks. QLoRA (Dettmers et al. 2023, section 4) found that adapting
# every linear layer is what matches full fine-tuning quality; attention-only LoRA falls short.
# Cohere's own fine-tuning API offers the same choice as QKVO_FFN. The LM head and embeddings stay frozen.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# (IA)^3: keys, values and the feed-forward intermediate activation (input of down_proj).
IA3_TARGETS = ("k_proj", "v_proj", "down_proj")
IA3_FEEDFORWARD = ("down_proj",)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout whose keep mask comes from 16-bit slices of 64-bit random integers.

    torch's dropout draws one float per element through bernoulli_, which on this CPU cost more
    than all the LoRA matmuls together (a quarter of a training step). Four 16-bit draws per 64-bit
    integer are ~5x cheaper. The drop probability is quantised to 1/65536 (0.1 -> 0.100006), far
    below anything training can see; the expectation is kept exact by scaling with the quantised
    keep probability."""
    drop_below = round(p * 65536)
    words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, device=x.device)
    u16 = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform in [-32768, 32768)
    scaled_keep = (u16 >= drop_below - 32768).to(x.dtype) * (65536 / (65536 - drop_below))
    return x * scaled_keep


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = dropout
        # fp32 masters whatever the base dtype; PEFT's default init (kaiming-uniform A, zero B).
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lora_A.to(x.dtype)
        b = (self.lora_B * self.scaling).to(x.dtype)
        dropped = fast_dropout(x, self.dropout) if self.training and self.dropout > 0 else x
        return self.base(x) + F.linear(F.linear(dropped, a), b)


class IA3Linear(nn.Module):
    def __init__(self, base: nn.Linear, feedforward: bool):
        super().__init__()
        self.base, self.feedforward = base, feedforward
        shape = (1, base.in_features) if feedforward else (base.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape, dtype=torch.float32, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.ia3_l.flatten().to(x.dtype)
        return self.base(x * scale) if self.feedforward else self.base(x) * scale


def _replace_linears(model: nn.Module, targets: tuple[str, ...], wrap) -> list[str]:
    """Swap every `nn.Linear` whose last name is in `targets` (decoder layers only) for wrap(name, linear)."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if child_name in targets and isinstance(child, nn.Linear) and ".layers." in f".{full}":
                setattr(module, child_name, wrap(child_name, child))
                replaced.append(full)
    if not replaced:
        raise TuneForgeError(f"{type(model).__name__} has no decoder layers named {', '.join(targets)} to adapt")
    return replaced


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def apply_lora(model: nn.Module, r: int, alpha: float, dropout: float) -> list[str]:
    freeze(model)
    return _replace_linears(model, LORA_TARGETS, lambda _, lin: LoRALinear(lin, r, alpha, dropout))


def apply_ia3(model: nn.Module) -> list[str]:
    freeze(model)
    return _replace_linears(model, IA3_TARGETS, lambda name, lin: IA3Linear(lin, name in IA3_FEEDFORWARD))


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters, by name: the only tensors the optimizer and checkpoints see."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
