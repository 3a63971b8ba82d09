"""Cross-entropy and accuracy over the trained tokens, computed only where they are defined.

The trained tokens are every labelled position of a row (labels != IGNORE, batches.collate): a
prompt/completion row's completion, a conversation's assistant turns of weight 1, wherever they sit
in the row. The vocabulary projection is applied to the hidden states of those positions only (most
positions are prompt), and in chunks under activation checkpointing when there are many, so a
(tokens x vocabulary) logits tensor never materialises for 128k/256k vocabularies: each chunk's
logits are recomputed in the backward pass instead of stored.

Rows of a batch often begin with the same tokens (the chat template's system turn, a shared
instruction): that shared prefix is run once for the batch and its keys/values reused by every row,
which is the same computation (causal attention: prefix positions never see what follows) on up to
a third fewer tokens for typical instruction data.

Accuracy (OCI: "an accuracy of 0.9 means 90 percent of the output tokens matched") is the share of
completion tokens whose argmax prediction equals the dataset token; loss is the mean cross-entropy
over the same tokens.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tuneforge.engine.batches import IGNORE

# Logits per chunk (64M: 256 MiB in fp32, plus as much again for its gradient): 1,365 completion
# positions at a 49k vocabulary, 523 at 128k, 262 at 256k. Fewer positions than that: one chunk.
CHUNK_LOGITS = 2**26
MIN_SHARED_PREFIX = 8  # below this, the second decoder call costs more than it saves


@dataclass
class TokenStats:
    loss_sum: torch.Tensor  # summed cross-entropy (keeps the graph when training)
    correct: int
    tokens: int


def decoder(model):
    """The transformer body under the causal-LM head (LlamaForCausalLM.model, CohereForCausalLM.model, ...)."""
    return model.model


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The logits the model's own forward computes from its final hidden states: the LM head, then what
    the architecture's registry entry says its head does after it (the XForCausalLM.forward of each):
    Cohere/Cohere2 multiply by config.logit_scale; Gemma 2 (and a Gemma 3 config that sets it) soft-caps,
    cap * tanh(logits / cap) with cap = config.final_logit_softcapping."""
    from tuneforge.catalog.architectures import architecture

    logits = model.lm_head(hidden)
    arch, config = architecture(model.config.model_type), model.config
    scale = getattr(config, "logit_scale", None) if arch is not None and arch.logit_scale else None
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None) if arch is not None and arch.softcap_final else None
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _chunk_stats(model, hidden: torch.Tensor, targets: torch.Tensor):
    logits = head_logits(model, hidden).float()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.argmax(-1) == targets).sum()
    return loss_sum, correct


def shared_prefix_len(batch: dict[str, torch.Tensor]) -> int:
    """Tokens every row starts with, stopping before the first labelled position of any row (the
    hidden state just before a trained token must come from the per-row pass; a conversation's later
    trained turns sit after its first, so capping at the first covers them all)."""
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    common = int(same.long().cumprod(0).sum())
    first_completion = int((labels != IGNORE).long().argmax(dim=1).min())
    shared = min(common, first_completion - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def last_hidden(model, batch: dict[str, torch.Tensor], prefix: int) -> torch.Tensor:
    """Final hidden states of positions prefix..end of each row (all positions when prefix is 0)."""
    body = decoder(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if prefix == 0:
        return body(input_ids=ids, attention_mask=mask).last_hidden_state
    prefix_out = body(input_ids=ids[:1, :prefix], use_cache=True)
    cache = prefix_out.cache if hasattr(prefix_out, "cache") else prefix_out.past_key_values
    cache.batch_repeat_interleave(ids.shape[0])  # differentiable: gradients of all rows flow into the prefix
    return body(input_ids=ids[:, prefix:], attention_mask=mask, **{_cache_argument(type(body)): cache}).last_hidden_state


@functools.cache
def _cache_argument(body_class: type) -> str:
    # transformers 5.24 (pinned) calls it `cache`; earlier 5.x releases, still in many GPU images, `past_key_values`.
    return "cache" if "cache" in inspect.signature(body_class.forward).parameters else "past_key_values"


def completion_stats(model, batch: dict[str, torch.Tensor], share_prefix: bool = True, prefix: int | None = None) -> TokenStats:
    """`prefix`: run that many leading tokens once for the batch (they must be shared by every row, see
    `shared_prefix_len`); None: as many as this batch's rows share, when `share_prefix`."""
    if prefix is None:
        prefix = shared_prefix_len(batch) if share_prefix else 0
    hidden = last_hidden(model, batch, prefix)
    targets = batch["labels"][:, prefix + 1 :]
    where = targets != IGNORE
    hidden, targets = hidden[:, :-1][where], targets[where]
    loss_sum = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    rows = max(1, CHUNK_LOGITS // model.config.vocab_size)
    for start in range(0, targets.numel(), rows):
        h, t = hidden[start : start + rows], targets[start : start + rows]
        if targets.numel() > rows and torch.is_grad_enabled():
            chunk_loss, chunk_correct = checkpoint(_chunk_stats, model, h, t, use_reentrant=False)
        else:
            chunk_loss, chunk_correct = _chunk_stats(model, h, t)
        loss_sum = loss_sum + chunk_loss
        correct += int(chunk_correct)
    return TokenStats(loss_sum, correct, int(targets.numel()))


class CompletionLoss(nn.Module):
    """The causal LM under one `forward(batch, prefix) -> TokenStats`: the module the training loop
    calls for every loss and evaluation. Under FSDP2 it is the root module, so the parameters outside
    the decoder layers (final norm, LM head) are gathered around each call: `completion_stats` calls
    the decoder body and the LM head separately, which FSDP could not see from the model's own forward.

    The shared-prefix pass is skipped where gradients flow through it under FSDP2 (`sharded`) or
    activation checkpointing: its keys/values reach the rows' pass through the cache, outside the
    layer outputs FSDP hooks its backward on (it would reshard a layer before that gradient is done),
    and a recomputed layer would write the cache twice. Without gradients (evaluation) it runs.
    `share_prefix = False` skips it everywhere (the run's `shared_prefix` setting, train.py)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.sharded = False
        self.share_prefix = True

    def forward(self, batch: dict[str, torch.Tensor], prefix: int | None = None) -> TokenStats:
        if not self.share_prefix or (torch.is_grad_enabled() and (self.sharded or self.model.is_activation_checkpointing)):
            prefix = 0
        return completion_stats(self.model, batch, prefix=prefix)

    @staticmethod
    def of(model: nn.Module) -> CompletionLoss:
        return model if isinstance(model, CompletionLoss) else CompletionLoss(model)
