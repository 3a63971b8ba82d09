"""The two fine-tuning methods as small modules wrapped around frozen `nn.Linear` layers.

LoRA (Hu et al. 2021):    y = W x + (alpha / r) * B A dropout(x)          A: r x in, B: out x r, B = 0 at init
T-Few / (IA)^3 (Liu et al. 2022, section 3.3):
    keys/values:          y = l * (W x)                                   l: out, ones at init
    feed-forward:         y = W (l * x)   on down_proj, whose input is act(gate x) * (up x),
                          i.e. the intermediate activation the paper rescales (l_ff)

Why our own modules rather than PEFT's layers: the frozen base multiplies in bf16 (5x the fp32
matmul rate on this CPU) while the adapter weights stay fp32 masters for AdamW and the activations
fp32 (`precision.py`); PEFT upcasts every activation to the adapter dtype, which costs more than the
adapter itself, and LoRA's backward is written by hand here (`_LoRAFunction`). The parameter names and
shapes follow PEFT's exactly, and `peft_format.py` writes/reads PEFT's on-disk format, so the result
loads with plain `PeftModel.from_pretrained` (tested for identical logits).

`adapters_disabled(model)` switches every adapter off for a block (LoRA's update scaled by 0, (IA)^3's
vectors bypassed): the frozen base itself, in the same weights. DPO's reference model is that (train.py),
or, for a run that starts from another run's adapter, that adapter swapped in (`adapter_swapped`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from tuneforge.catalog.architectures import ARCHITECTURES, Architecture
from tuneforge.errors import TuneForgeError

# All linear layers of the decoder blocks. QLoRA (Dettmers et al. 2023, section 4) found that adapting
# every linear layer is what matches full fine-tuning quality; attention-only LoRA falls short.
# Cohere's own fine-tuning API offers the same choice as QKVO_FFN. The LM head and embeddings stay frozen.
# These are Llama's names; each architecture's own are in its registry entry (Phi-3: fused qkv_proj, gate_up_proj).
LORA_TARGETS = ARCHITECTURES["llama"].lora_targets
# (IA)^3: keys, values and the feed-forward intermediate activation (input of down_proj).
IA3_TARGETS = ARCHITECTURES["llama"].ia3_targets
IA3_FEEDFORWARD = ARCHITECTURES["llama"].ia3_feedforward
ADAPTER_TENSORS = ("lora_A", "lora_B", "ia3_l")  # the trained tensors' own names, in their wrapper modules


def architecture_of(model: nn.Module) -> Architecture:
    """The registry entry of `model`'s architecture (weights.py refuses the others before a model is
    built); a model of another type (a test's toy) is taken to use Llama's names."""
    config = getattr(model, "config", None)
    return ARCHITECTURES.get(getattr(config, "model_type", None), ARCHITECTURES["llama"])


def dropout_keep_mask(shape: torch.Size, p: float, device) -> tuple[torch.Tensor, float]:
    """Inverted-dropout keep mask (bool) and the scale that keeps the expectation exact.

    torch's dropout draws one float per element through bernoulli_, which on this CPU cost more
    than all the LoRA matmuls together (a quarter of a training step). Here the mask comes from
    16-bit slices of 64-bit random integers, ~5x cheaper. The drop probability is quantised to
    1/65536 (0.1 -> 0.100006), far below anything training can see; the scale uses the quantised
    keep probability, so E[mask * scale] = 1 exactly."""
    drop_below = round(p * 65536)
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    u16 = words.view(torch.int16)[:n].view(shape)  # uniform in [-32768, 32768)
    return u16 >= drop_below - 32768, 65536 / (65536 - drop_below)


class _LoRAFunction(torch.autograd.Function):
    """y = x W^T + s * ((x * keep) A^T) B^T, with hand-written backward.

    Same maths as autograd over the plain expression (tested), in about a third of the operations:
    products run in W's dtype (bf16 under mixed precision) and the sum in x's (fp32), each cast and
    the dropout mask happen once, and nothing is computed for the frozen W. `keep` is None when
    there is no dropout; `s` already holds the dropout's 1/(1-p)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, s, keep):
        mm = weight.dtype
        xm = x.reshape(-1, x.shape[-1]).to(mm)
        dropped = xm * keep.reshape(xm.shape) if keep is not None else xm
        a, b = lora_a.to(mm), lora_b.to(mm)
        h = dropped @ a.t()  # M x r
        out = (xm @ weight.t()).to(x.dtype)
        out += (h * s) @ b.t()  # in place in x's dtype: the small delta is not rounded to bf16
        if bias is not None:
            out += bias
        ctx.save_for_backward(weight, a, b, dropped, h, keep)
        ctx.s, ctx.x_dtype, ctx.shape = s, x.dtype, x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        weight, a, b, dropped, h, keep = ctx.saved_tensors
        dym = dy.reshape(-1, dy.shape[-1]).to(weight.dtype)
        g = (dym @ b) * ctx.s  # d loss / d h, M x r
        grad_b = (dym.t() @ h).float() * ctx.s
        grad_a = (g.t() @ dropped).float()
        dx = (dym @ weight).to(ctx.x_dtype)
        dd = g @ a
        dx += dd * keep.reshape(dd.shape) if keep is not None else dd
        return dx.view(ctx.shape), None, None, grad_a, grad_b, None, None


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = dropout
        self.disabled = False  # `adapters_disabled`: the base layer alone
        # fp32 masters whatever the base dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, dtype=torch.float32, device=base.weight.device))
        init_adapter(self)

    def initial_values(self) -> dict[str, torch.Tensor]:
        """PEFT's default init (kaiming-uniform A, zero B), drawn on the CPU from the global RNG."""
        a = torch.empty(self.lora_A.shape)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        return {"lora_A": a, "lora_B": torch.zeros(self.lora_B.shape)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, s = None, self.scaling
        if self.disabled and not self.base.weight.is_floating_point():
            return self.base(x)
        if self.disabled:  # scale 0 through the same kernel: the base's product exactly as the adapted pass computes it
            return _LoRAFunction.apply(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, 0.0, None)
        if self.training and self.dropout > 0:
            keep, scale = dropout_keep_mask(x.shape, self.dropout, x.device)
            s *= scale
        if not self.base.weight.is_floating_point():  # a 4-bit base (quantize.py): its own kernel, autograd for the rest
            dropped = x * keep if keep is not None else x
            return self.base(x) + (dropped @ self.lora_A.t()) @ (self.lora_B.t() * s)
        return _LoRAFunction.apply(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, s, keep)


class IA3Linear(nn.Module):
    def __init__(self, base: nn.Linear, feedforward: bool):
        super().__init__()
        self.base, self.feedforward = base, feedforward
        self.disabled = False  # `adapters_disabled`: the base layer alone
        shape = (1, base.in_features) if feedforward else (base.out_features, 1)
        self.ia3_l = nn.Parameter(torch.empty(shape, dtype=torch.float32, device=base.weight.device))
        init_adapter(self)

    def initial_values(self) -> dict[str, torch.Tensor]:
        return {"ia3_l": torch.ones(self.ia3_l.shape)}  # the identity: training starts from the base model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            return self.base(x)
        scale = self.ia3_l.flatten().to(x.dtype)
        return self.base(x * scale) if self.feedforward else self.base(x) * scale


def init_adapter(module: nn.Module) -> None:
    """Give a new LoRALinear/IA3Linear its initial values; on the meta device (a model built before its
    weights are read, weights.load_for_training) there is nothing to fill: `initial_adapter` does it later."""
    if module.base.weight.device.type != "meta":
        with torch.no_grad():
            for name, value in module.initial_values().items():
                getattr(module, name).copy_(value)


def initial_adapter(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor's initial value, by parameter name, as whole fp32 CPU tensors drawn in module
    order from the global RNG: the same values whether the adapter is then sharded over ranks or not."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (LoRALinear, IA3Linear)):
            out |= {f"{name}.{key}": value for key, value in module.initial_values().items()}
    return out


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


def apply_lora(model: nn.Module, r: int, alpha: float, dropout: float, targets: tuple[str, ...] | None = None) -> list[str]:
    """`targets`: the projection names to adapt; None: every linear layer of the architecture's blocks."""
    freeze(model)
    targets = targets or architecture_of(model).lora_targets
    return _replace_linears(model, targets, lambda _, lin: LoRALinear(lin, r, alpha, dropout))


def apply_ia3(model: nn.Module, targets: tuple[str, ...] | None = None, feedforward: tuple[str, ...] | None = None) -> list[str]:
    """`targets`/`feedforward` (scaled on their input): None takes the architecture's (keys, values, down_proj)."""
    freeze(model)
    arch = architecture_of(model)
    targets, feedforward = targets or arch.ia3_targets, arch.ia3_feedforward if feedforward is None else feedforward
    return _replace_linears(model, targets, lambda name, lin: IA3Linear(lin, name in feedforward))


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters, by name: the only tensors the optimizer and checkpoints see."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Inside the block `model` computes as its frozen base: every LoRA/(IA)^3 layer passes its input
    through the base layer alone. No weights are copied or changed."""
    layers = [m for m in model.modules() if isinstance(m, (LoRALinear, IA3Linear))]
    for layer in layers:
        layer.disabled = True
    try:
        yield
    finally:
        for layer in layers:
            layer.disabled = False


@contextmanager
def adapter_swapped(params: dict[str, nn.Parameter], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block the adapter `params` hold `values` (same shapes, devices and dtypes): the tensors are
    swapped, not copied, and swapped back after, so the optimizer's parameters and their gradients are untouched."""
    for name, p in params.items():
        p.data, values[name] = values[name], p.data
    try:
        yield
    finally:
        for name, p in params.items():
            p.data, values[name] = values[name], p.data
