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

DPO (Rafailov et al. 2023; `PreferenceLoss`) scores a batch of pairs laid out as n chosen rows then n
rejected rows (batches.collate): each row's log-probability of its reply is the sum of its trained
tokens' log-probabilities, under the policy (the base with the adapter) and under the reference (the
same base with the adapter off, adapters.adapters_disabled, without gradients). With the implicit
rewards r = beta * (log pi - log ref), a pair's loss is -log sigmoid(r_chosen - r_rejected) (the
sigmoid loss of the paper, TRL's default); its reward accuracy is 1 when r_chosen > r_rejected.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tuneforge.engine.adapters import adapter_parameters, adapter_swapped, adapters_disabled
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

    @property
    def count(self) -> int:
        """What the loss and accuracy are averaged over: trained tokens."""
        return self.tokens

    def sums(self) -> dict[str, float]:
        """The metrics besides the loss, as sums over `count` (evaluations add them up across batches)."""
        return {"accuracy": float(self.correct)}


@dataclass
class PairStats:
    loss_sum: torch.Tensor  # summed DPO loss over the pairs (keeps the graph when training)
    chosen_rewards: float  # summed beta * (log pi - log ref) of the chosen replies
    rejected_rewards: float  # the same for the rejected replies
    correct: int  # pairs whose chosen reward is above the rejected one
    pairs: int
    preferred: int = 0  # pairs whose chosen reply the policy itself finds likelier than the rejected one

    @property
    def count(self) -> int:
        """What the loss and accuracy are averaged over: pairs."""
        return self.pairs

    def sums(self) -> dict[str, float]:
        return {
            "accuracy": float(self.correct),
            "rewardsChosen": self.chosen_rewards,
            "rewardsRejected": self.rejected_rewards,
            "preferenceAccuracy": float(self.preferred),
        }


def reward_metrics(sums: dict[str, float], count: int, prefix: str = "") -> dict[str, float]:
    """DPO's logged metrics from summed `PairStats.sums()` over `count` pairs: the mean chosen and
    rejected rewards, their margin and the reward accuracy (names prefixed for validation records)."""
    chosen, rejected = sums["rewardsChosen"] / max(count, 1), sums["rewardsRejected"] / max(count, 1)
    names = ("RewardsChosen", "RewardsRejected", "RewardMargin", "RewardAccuracy")
    values = (chosen, rejected, chosen - rejected, sums["accuracy"] / max(count, 1))
    return {(prefix + name if prefix else name[0].lower() + name[1:]): v for name, v in zip(names, values, strict=True)}


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


def _chunk_logps(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head_logits(model, hidden).float(), targets, reduction="none")


def sequence_logps(model, batch: dict[str, torch.Tensor], prefix: int = 0) -> torch.Tensor:
    """Per row: the sum of its trained tokens' log-probabilities (log pi(reply | context)), in fp32.
    `prefix` as in `completion_stats` (that many leading tokens shared by every row, run once)."""
    return _row_logps(model, last_hidden(model, batch, prefix), batch["labels"][:, prefix + 1 :])


def pair_contexts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per pair of a batch of pairs (n chosen rows, then n rejected rows): how many leading tokens its two
    rows share, stopping before the token whose hidden state predicts the first trained token."""
    ids, labels = batch["input_ids"], batch["labels"]
    n = ids.shape[0] // 2
    same = (ids[:n] == ids[n:]).long().cumprod(dim=1).sum(dim=1)
    first = (labels != IGNORE).long().argmax(dim=1)
    return torch.minimum(same, torch.minimum(first[:n], first[n:]) - 1).clamp(min=0)


def pair_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`sequence_logps` of a batch of pairs with each pair's context run once for its two rows: the context
    is most of a preference row (a 45-token prompt before a 12-token reply in the bundled task), so this
    runs a fifth to a half fewer tokens than two whole rows, with the same result (causal attention: the
    context's positions never see the reply).

    Pass 1: the n contexts, right-padded, with a cache. Pass 2: the 2n continuations (each row from its
    pair's context length on), right-padded, over that cache repeated for the two rows of each pair; the
    attention mask hides the contexts' padding and the position ids carry on from each context's own
    length, so every real token sees exactly the keys and positions it has in its whole row. Gradients flow
    through the cache into pass 1, as in `last_hidden`'s shared prefix. Falls back to whole rows where the
    contexts are short or a sliding window (counted over the padded cache) could differ."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    n = ids.shape[0] // 2
    context = pair_contexts(batch)
    width = int(context.max()) if n else 0
    lengths = mask.sum(dim=1)
    rest = int((lengths - context.repeat(2)).max()) if n else 0
    window = getattr(model.config, "sliding_window", None)
    if width < MIN_SHARED_PREFIX or (window is not None and width + rest > window):
        return sequence_logps(model, batch, 0)
    body = decoder(model)
    device = ids.device  # index tensors beside the batch (a GPU run's batch is on the GPU)
    context_mask = (torch.arange(width, device=device)[None, :] < context[:, None]).long()
    out = body(input_ids=ids[:n, :width], attention_mask=context_mask, use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    # Rows in the order [chosen 0, rejected 0, chosen 1, ...], as the cache repeated row by row.
    order = torch.stack([torch.arange(n, device=device), torch.arange(n, device=device) + n], dim=1).reshape(-1)
    cache.batch_repeat_interleave(2)  # differentiable: both rows' gradients flow into their context
    start = context.repeat_interleave(2)
    at = start[:, None] + torch.arange(rest, device=device)[None, :]
    inside = at < lengths[order][:, None]
    at = at.clamp(max=ids.shape[1] - 1)
    rows_ids = ids[order].gather(1, at)
    rows_labels = torch.where(inside, labels[order].gather(1, at), IGNORE)
    full_mask = torch.cat([context_mask.repeat_interleave(2, dim=0), inside.long()], dim=1)
    hidden = body(
        input_ids=rows_ids, attention_mask=full_mask, position_ids=at, **{_cache_argument(type(body)): cache}
    ).last_hidden_state
    logps = _row_logps(model, hidden, rows_labels[:, 1:])
    return logps[torch.argsort(order)]  # back to n chosen rows, then n rejected rows


def _row_logps(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probabilities of `targets` (labels shifted by one: hidden position t
    predicts targets[t]; IGNORE elsewhere)."""
    where = targets != IGNORE
    row_of = where.nonzero()[:, 0]  # the row of each trained token, in the order `[where]` flattens them
    hidden, targets = hidden[:, :-1][where], targets[where]
    rows = max(1, CHUNK_LOGITS // model.config.vocab_size)
    pieces = []
    for start in range(0, targets.numel(), rows):
        h, t = hidden[start : start + rows], targets[start : start + rows]
        if targets.numel() > rows and torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, model, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(model, h, t))
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    return token_logps.new_zeros(where.shape[0]).index_add(0, row_of, token_logps)


def row_digests(batch: dict[str, torch.Tensor]) -> list[bytes]:
    """Per row of a batch, a 16-byte digest of its tokens (padding left out): what identifies a row across batches."""
    ids, lengths = batch["input_ids"].cpu(), batch["attention_mask"].sum(dim=1).tolist()
    return [hashlib.blake2b(ids[r, :n].numpy().tobytes(), digest_size=16).digest() for r, n in enumerate(lengths)]


def pair_stats(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> PairStats:
    """DPO's sigmoid loss and rewards of n pairs from 2n rows' log-probabilities (n chosen rows, then n rejected)."""
    n = policy.shape[0] // 2
    rewards = beta * (policy - reference)
    chosen, rejected = rewards[:n], rewards[n:]
    losses = -F.logsigmoid(chosen - rejected)
    chosen, rejected = chosen.detach(), rejected.detach()
    preferred = int((policy[:n] > policy[n:]).sum())
    return PairStats(losses.sum(), float(chosen.sum()), float(rejected.sum()), int((chosen > rejected).sum()), n, preferred)


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
        return completion_stats(self.model, batch, prefix=self.prefix_for(batch, prefix))

    def prefix_for(self, batch: dict[str, torch.Tensor], prefix: int | None) -> int | None:
        """The shared prefix this pass may run once (None: as many tokens as the rows share), or 0 where it may not."""
        if not self.share_prefix or (torch.is_grad_enabled() and (self.sharded or self.model.is_activation_checkpointing)):
            return 0
        return prefix

    @staticmethod
    def of(model: nn.Module) -> CompletionLoss:
        return model if isinstance(model, CompletionLoss) else CompletionLoss(model)


class PreferenceLoss(CompletionLoss):
    """The DPO scorer beside `CompletionLoss`: `forward(batch of pairs, prefix) -> PairStats`. The
    policy pass keeps the graph; the reference pass (adapters off) runs without gradients, so DPO costs
    one more forward pass per step and no second model. `reference_adapter` (adapter tensors by parameter
    name): the reference is the model with that adapter instead, e.g. the supervised adapter a run starts
    from (TRL does the same for a PEFT model that already holds an adapter: its "ref" copy).

    The reference never changes during a run, so each row's reference log-probability is kept (by a digest
    of the row's tokens, ~100 bytes a row) the first time it is computed: a batch whose rows were all seen
    (every epoch after the first, every evaluation cycle after the first) skips the reference pass. Equal to
    recomputing it up to the rounding of a different batch's padding."""

    def __init__(self, model: nn.Module, beta: float):
        super().__init__(model)
        self.beta = beta
        self._reference_adapter: dict[str, torch.Tensor] | None = None
        self.reference_logps: dict[bytes, float] = {}

    @property
    def reference_adapter(self) -> dict[str, torch.Tensor] | None:
        return self._reference_adapter

    @reference_adapter.setter
    def reference_adapter(self, adapter: dict[str, torch.Tensor] | None) -> None:
        self._reference_adapter = adapter
        self.reference_logps.clear()  # they were another reference's

    def reference(self):
        if self._reference_adapter is None:
            return adapters_disabled(self.model)
        return adapter_swapped(adapter_parameters(self.model), self._reference_adapter)

    def forward(self, batch: dict[str, torch.Tensor], prefix: int | None = None) -> PairStats:
        """`prefix` is not used: a pair's two rows share their whole context, which `pair_logps` runs once
        per pair wherever the batch-wide shared prefix would be allowed (`prefix_for`)."""
        policy = self.row_logps(batch)
        keys = row_digests(batch)
        known = [self.reference_logps.get(k) for k in keys]
        if None not in known:
            return pair_stats(policy, torch.tensor(known, dtype=policy.dtype, device=policy.device), self.beta)
        training = self.training
        self.train(False)  # the reference is one fixed model: no LoRA dropout in its pass
        try:
            with torch.no_grad(), self.reference():
                reference = self.row_logps(batch)
        finally:
            self.train(training)
        self.reference_logps.update(zip(keys, reference.tolist(), strict=True))
        return pair_stats(policy, reference, self.beta)

    def row_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.prefix_for(batch, None) == 0:  # whole rows in this pass (share_prefix off, FSDP2 or checkpointing)
            return sequence_logps(self.model, batch, 0)
        return pair_logps(self.model, batch)
