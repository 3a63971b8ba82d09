"""Linear layers that apply a different adapter to each row of one batch, in the same forward pass.

Every decoder projection (q, k, v, o, gate, up, down; Phi-3's fused qkv and gate_up) becomes a `MultiAdapterLinear`: the frozen
base layer plus stacked adapter weights, one slot per resident adapter (slot 0 is the plain base:
zero LoRA, unit (IA)^3). The engine sets `AdapterRows` before each forward: which slot each row of
the batch uses. Then, for x of shape [rows, tokens, in] (s: LoRA's alpha/r, folded into B at load):

  (IA)^3 on the input (feed-forward):  x <- x * l_in[slot[row]]
  base:                                y  = W x
  (IA)^3 on the output (keys, values): y <- y * l_out[slot[row]]
  LoRA:                                y += s B[slot[row]] A[slot[row]] x

so nothing is merged into W and nothing is switched between requests: tokens of different
adapters, of both methods, and of the base go through one forward (S-LoRA, Punica). The engine's
forward is one flattened sequence x [1, tokens, in] (tuneforge/serving/kv_cache.py), so the slot
is per token. Two ways to compute the LoRA term:

  dense      h = x A_all^T over all S slots at once ([tokens, S*r]), zeroed except the token's own
             slot, then y += h B_all. Extra work S*r*(in+out) per token, in two well-shaped matmuls
             whatever the mix; used while few slots are resident (`DENSE_MAX_SLOTS`).
  segmented  per LoRA adapter present in the forward, its tokens gathered, y[tokens] += (x A^T) B
             (Punica's SGMV written with torch ops): work r*(in+out) per token plus a handful of ops
             per adapter present, independent of how many adapters are resident.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.engine.adapters import architecture_of

# Slot 0 (the base) + 8 adapters. Dense costs S*r*(in+out) per token, segmented r*(in+out) plus ~4 ops per adapter
# present: with few slots the two larger matmuls win (an estimate: the two paths were not timed against each other).
DENSE_MAX_SLOTS = 9


@dataclass
class LayerTensors:
    """One adapter's weights for one layer, fp32: LoRA A [r, in] and s * B^T [r, out]; (IA)^3 vectors."""

    lora_a: torch.Tensor | None = None
    lora_bt: torch.Tensor | None = None
    ia3_in: torch.Tensor | None = None
    ia3_out: torch.Tensor | None = None


class AdapterRows:
    """Which adapter slot each token of the next forward uses; shared by every MultiAdapterLinear."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.slots: torch.Tensor | None = None  # [tokens] long
        self.lora_mask: torch.Tensor | None = None  # [tokens, S, 1] one-hot, dense path only
        self.segments: list[tuple[int, torch.Tensor]] = []  # (slot, its tokens), segmented path only
        self.has_lora = self.has_ia3 = False

    def set(self, slots: torch.Tensor, stack_slots: int, lora_slots: set[int], has_ia3: bool) -> None:
        """`stack_slots`: slots allocated in the stacks; `lora_slots`: the LoRA adapters' slots among `slots`."""
        self.slots, self.has_lora, self.has_ia3 = slots, bool(lora_slots), has_ia3
        if not lora_slots:
            return
        if stack_slots <= DENSE_MAX_SLOTS:
            self.lora_mask = F.one_hot(slots, stack_slots).float()[:, :, None]
        else:
            self.segments = [(s, (slots == s).nonzero()[:, 0]) for s in sorted(lora_slots)]


class MultiAdapterLinear(nn.Module):
    def __init__(self, base: nn.Linear, rows: AdapterRows):
        super().__init__()
        self.base, self.rows = base, rows
        self.in_features, self.out_features = base.in_features, base.out_features
        # Stacks, allocated when the first adapter that needs them arrives (`grow`).
        self.lora_a: torch.Tensor | None = None  # [S, r, in]
        self.lora_b: torch.Tensor | None = None  # [S, r, out]: B^T with the scaling folded in
        self.ia3_in: torch.Tensor | None = None  # [S, in]
        self.ia3_out: torch.Tensor | None = None  # [S, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.rows
        if rows.slots is None:
            return self.base(x)
        if rows.has_ia3 and self.ia3_in is not None:
            x = x * self.ia3_in[rows.slots].to(x.dtype)
        y = self.base(x)
        if rows.has_ia3 and self.ia3_out is not None:
            y = y * self.ia3_out[rows.slots].to(y.dtype)
        if rows.has_lora and self.lora_a is not None:
            y = self._add_lora(x, y)
        return y

    def _add_lora(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask, dtype = self.rows.lora_mask, self.lora_a.dtype
        if mask is not None:  # dense over every slot, the token's own slot kept
            s, r = self.lora_a.shape[:2]
            h = F.linear(x.to(dtype), self.lora_a.view(s * r, -1))
            h = (h.view(*h.shape[:-1], s, r) * mask).view(*h.shape)
            return y + (h @ self.lora_b.view(s * r, -1)).to(y.dtype)
        x2, y2 = x.reshape(-1, x.shape[-1]), y.view(-1, y.shape[-1])  # segmented: y is this forward's own tensor
        for slot, tokens in self.rows.segments:
            h = x2.index_select(0, tokens).to(dtype) @ self.lora_a[slot].t() @ self.lora_b[slot]
            y2.index_add_(0, tokens, h.to(y.dtype))
        return y

    # -- slot storage (the decode thread only) -----------------------------------------------------

    def grow(self, slots: int, rank: int, lora: bool, ia3_in: bool, ia3_out: bool) -> None:
        """Make the stacks hold at least `slots` slots and `rank` LoRA rank; existing slots are kept."""
        dev = self.base.weight.device
        if lora or self.lora_a is not None:
            self.lora_a = _grown(self.lora_a, (slots, rank, self.in_features), 0.0, dev)
            self.lora_b = _grown(self.lora_b, (slots, rank, self.out_features), 0.0, dev)
        if ia3_in or self.ia3_in is not None:
            self.ia3_in = _grown(self.ia3_in, (slots, self.in_features), 1.0, dev)
        if ia3_out or self.ia3_out is not None:
            self.ia3_out = _grown(self.ia3_out, (slots, self.out_features), 1.0, dev)

    def write_slot(self, slot: int, t: LayerTensors | None) -> None:
        """Put one adapter's tensors for this layer in `slot` (None: the adapter leaves this layer alone)."""
        t = t or LayerTensors()
        if self.lora_a is not None:
            self.lora_a[slot].zero_()
            self.lora_b[slot].zero_()
            if t.lora_a is not None:
                self.lora_a[slot, : t.lora_a.shape[0]] = t.lora_a
                self.lora_b[slot, : t.lora_bt.shape[0]] = t.lora_bt
        for stack, vector in ((self.ia3_in, t.ia3_in), (self.ia3_out, t.ia3_out)):
            if stack is not None:
                stack[slot] = 1.0 if vector is None else vector


def _grown(old: torch.Tensor | None, shape: tuple[int, ...], fill: float, device) -> torch.Tensor:
    if old is not None and all(o >= s for o, s in zip(old.shape, shape)):
        return old
    if old is not None:
        shape = tuple(max(o, s) for o, s in zip(old.shape, shape))
    new = torch.full(shape, fill, dtype=torch.float32, device=device)
    if old is not None:
        new[tuple(slice(0, n) for n in old.shape)] = old
    return new


def attach(model: nn.Module) -> tuple[AdapterRows, dict[str, MultiAdapterLinear]]:
    """Wrap every decoder projection of `model` (in place); the modules by their transformers name."""
    rows = AdapterRows()
    layers: dict[str, MultiAdapterLinear] = {}
    arch = architecture_of(model)
    targets = {*arch.lora_targets, *arch.ia3_targets}  # Phi-3: the fused qkv_proj and gate_up_proj
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if child_name in targets and isinstance(child, nn.Linear) and ".layers." in f".{full}":
                layers[full] = MultiAdapterLinear(child, rows)
                setattr(module, child_name, layers[full])
    return rows, layers
