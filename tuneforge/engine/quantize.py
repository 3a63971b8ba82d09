"""A 4-bit frozen base (`--quantize-base nf4`): QLoRA (Dettmers et al. 2023), with bitsandbytes' NF4.

Every linear layer of the decoder blocks becomes a `bitsandbytes.nn.Linear4bit` holding NF4 weights in
blocks of 64 with double-quantized block scales (~0.53 bytes a parameter instead of 2), dequantized
to the compute dtype inside each matmul. The LM head and embeddings stay as they are (QLoRA keeps
them in 16 bits too), and so do the adapters: fp32 masters, trained as usual on top of the 4-bit
layers (adapters.LoRALinear adds its update to the Linear4bit's output; (IA)^3 scales around it).
That is what lets a 70B LoRA fit one 80 GB GPU (`tuneforge plan ... --gpus 1 --quantize-base nf4`).

One process only: the 4-bit tensors (packed bytes plus a quantization state) are not something FSDP2
can shard; several GPUs shard the bf16 base instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.errors import TuneForgeError

if TYPE_CHECKING:
    from torch import nn

QUANTIZATIONS = ("nf4",)
INSTALL_HINT = "pip install 'tuneforge[qlora]' (bitsandbytes)"


def check_layout(kind: str, world: int) -> None:
    """What can be refused before any process starts (no torch needed): the kind and one process."""
    if kind not in QUANTIZATIONS:
        raise TuneForgeError(f"--quantize-base {kind}: allowed values are {', '.join(QUANTIZATIONS)}")
    if world > 1:
        raise TuneForgeError(
            f"--quantize-base {kind} trains on one process (one GPU): FSDP cannot shard 4-bit weights; "
            "on several GPUs leave the base in bf16, sharded (drop --quantize-base)"
        )


def require(kind: str, device: str, world: int) -> None:
    """A clear error when `--quantize-base kind` cannot run here."""
    import torch

    check_layout(kind, world)
    try:
        import bitsandbytes.functional as bnbf
    except ImportError as err:
        raise TuneForgeError(f"--quantize-base {kind} needs bitsandbytes, which is not installed: {INSTALL_HINT}") from err
    try:  # the backend for this device exists and runs (bitsandbytes loads its kernels per device type)
        probe = torch.ones(64, 64, dtype=torch.bfloat16, device=device)
        bnbf.dequantize_4bit(*bnbf.quantize_4bit(probe, quant_type=kind))
    except (RuntimeError, NotImplementedError) as err:
        raise TuneForgeError(f"--quantize-base {kind}: bitsandbytes cannot run 4-bit kernels on {device} here ({err})") from err


def quantize_linears(module: nn.Module, kind: str, device: str) -> int:
    """Replace every floating-point linear layer inside `module` (a decoder layer, its weights already
    read) by a 4-bit one on `device`, including the frozen bases inside adapter wrappers. Returns how many."""
    import bitsandbytes as bnb
    from torch import nn

    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.weight.is_floating_point():
                compute = child.weight.dtype  # bf16 where the hardware multiplies fast in it, else fp32 (precision.py)
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=compute,
                    compress_statistics=True,
                    quant_type=kind,
                    device="meta",
                )
                # Params4bit quantizes when moved to a device.
                q.weight = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=True, quant_type=kind
                ).to(device)
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data.to(device), requires_grad=False)
                setattr(parent, name, q)
                swapped += 1
    return swapped
