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

import torch
import torch.nn.functional as F
from torch import nn


class Bf16Linear(nn.Linear):
    """A frozen linear layer that multiplies in bf16 and answers in the dtype it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


def _bf16_copy(linear: nn.Linear) -> Bf16Linear:
    out = Bf16Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=torch.bfloat16)
    with torch.no_grad():
        out.weight.copy_(linear.weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    out.requires_grad_(False)
    return out


def use_bf16_matmuls(model: nn.Module) -> int:
    """Swap every `nn.Linear` of `model` (an fp32 causal LM) for a bf16 `Bf16Linear`. A tied LM head
    gets its own bf16 copy; the fp32 embedding stays for the lookup. Returns how many were swapped."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, _bf16_copy(child))
                swapped += 1
    return swapped
