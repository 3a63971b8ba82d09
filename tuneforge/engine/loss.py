"""Completion-token cross-entropy and accuracy, computed only where they are defined.

The vocabulary projection is applied to the hidden states of completion positions only (most
positions are prompt), and in chunks under activation checkpointing when there are many, so a
(tokens x vocabulary) logits tensor never materialises for 128k/256k vocabularies: each chunk's
logits are recomputed in the backward pass instead of stored.

Accuracy (OCI: "an accuracy of 0.9 means 90 percent of the output tokens matched") is the share of
completion tokens whose argmax prediction equals the dataset token; loss is the mean cross-entropy
over the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge.engine.batches import IGNORE

CHUNK_ROWS = 2048


@dataclass
class TokenStats:
    loss_sum: torch.Tensor  # summed cross-entropy (keeps the graph when training)
    correct: int
    tokens: int


def decoder(model):
    """The transformer body under the causal-LM head (LlamaForCausalLM.model, CohereForCausalLM.model, ...)."""
    return model.model


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.lm_head(hidden)
    # Command R scales its logits (CohereForCausalLM.forward: logits * logit_scale); Llama does not.
    scale = getattr(model.config, "logit_scale", None) if model.config.model_type == "cohere" else None
    return logits * scale if scale is not None else logits


def _chunk_stats(model, hidden: torch.Tensor, targets: torch.Tensor):
    logits = head_logits(model, hidden).float()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.argmax(-1) == targets).sum()
    return loss_sum, correct


def completion_stats(model, batch: dict[str, torch.Tensor]) -> TokenStats:
    hidden = decoder(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    hidden, targets = hidden[:, :-1][where], targets[where]
    loss_sum = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    for start in range(0, targets.numel(), CHUNK_ROWS):
        h, t = hidden[start : start + CHUNK_ROWS], targets[start : start + CHUNK_ROWS]
        if targets.numel() > CHUNK_ROWS and torch.is_grad_enabled():
            chunk_loss, chunk_correct = checkpoint(_chunk_stats, model, h, t, use_reentrant=False)
        else:
            chunk_loss, chunk_correct = _chunk_stats(model, h, t)
        loss_sum = loss_sum + chunk_loss
        correct += int(chunk_correct)
    return TokenStats(loss_sum, correct, int(targets.numel()))
