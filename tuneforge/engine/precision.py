"""Mixed precision: bf16 matrix products, fp32 everything else.

The frozen base's linear layers (the decoder's seven projections and the LM head) keep their
weights in bf16 and multiply in bf16, which runs ~5x the fp32 rate on CPUs with AVX512-BF16/AMX
and on GPUs. Everything between them -- the residual stream, RMSNorm, rotary embeddings, attention
softmax, SiLU, the loss -- stays fp32, as do the adapter weights and optimizer state. This is what
PyTorch autocast does over an fp32 model, minus its per-step weight casts (the bf16 copies are made
once: the base is frozen).

Why not a plain bf16 model: rounding the residual stream to bf16 at every layer swallows part of a
small adapter's contribution, and in our benchmark a bf16-trained LoRA ended ~8 % above an fp32-
trained one in validation loss; keeping the stream fp32 costs little on CPU (the element-wise work
was converting bf16 to fp32 and back anyway).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def pick_device(requested: str) -> str:
    """auto | cpu | cuda -> the device to run on; a clear error when CUDA is asked for and absent."""
    from tuneforge.errors import TuneForgeError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise TuneForgeError("--device cuda: no CUDA device is available; use --device cpu")
    return requested


def pick_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype of the frozen base's matrix products: bf16 where the hardware has bf16 matmuls (CUDA;
    CPUs with AVX512-BF16 or AMX, ~5x the fp32 rate there). Activations, the residual stream, the
    adapter weights and the optimizer state are fp32 either way."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16_matmuls() else torch.float32


def cpu_has_bf16_matmuls() -> bool:
    """AVX512-BF16 or AMX. Without them (e.g. an AVX2-only EPYC) oneDNN multiplies bf16 in a slow
    generic path: 0.3 GFLOP/s against 170 in fp32 on such a machine."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Bf16Linear(nn.Linear):
    """A frozen linear layer that multiplies in bf16 and answers in the dtype it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


def _as_bf16(linear: nn.Linear) -> Bf16Linear:
    """The same layer as a frozen Bf16Linear; a bf16 weight is taken as is, not copied."""
    out = Bf16Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    out.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
    if linear.bias is not None:
        out.bias = nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
    return out


def use_bf16_matmuls(model: nn.Module) -> int:
    """Make every `nn.Linear` of `model` a bf16 `Bf16Linear` and every other floating-point tensor
    (embeddings, norms, buffers) fp32, whatever dtype the checkpoint was loaded in. Layers are
    converted one at a time, so a bf16 checkpoint never exists in fp32 and an fp32 one never twice.
    A tied LM head gets its own bf16 weight; the embedding lookup stays fp32. Returns how many
    linear layers were swapped."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, _as_bf16(child))
                swapped += 1
    for module in model.modules():
        if isinstance(module, Bf16Linear):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.is_floating_point() and tensor.dtype != torch.float32:
                tensor.data = tensor.data.float()
    return swapped
