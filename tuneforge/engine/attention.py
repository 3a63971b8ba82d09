"""Attention for bf16 models on CPU: PyTorch's SDPA, run on fp32 copies of q/k/v.

On this CPU the bf16 SDPA kernels (forward + backward) are ~1.6x slower than the fp32 ones for
fine-tuning shapes (short sequences, 64-dim heads), while the matmuls of the rest of the model
are ~2.5x faster in bf16; so the model stays bf16 and only attention is upcast. fp32 attention
is also the more accurate of the two. Registered with transformers' attention interface so the
model code is untouched; `use_fp32_attention(model)` switches a loaded model to it.
"""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "tuneforge_fp32_sdpa"


def fp32_sdpa_forward(module, query, key, value, attention_mask, **kwargs):
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


AttentionInterface.register(NAME, fp32_sdpa_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_fp32_attention(model) -> None:
    model.set_attn_implementation(NAME)
