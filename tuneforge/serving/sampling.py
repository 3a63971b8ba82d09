"""The next token of every row at once: penalties, greedy or temperature / top-k / top-p sampling.

Every row has its own parameters, so nothing here loops over rows: each parameter is a [rows]
tensor. Sampling is inverse-CDF over the filtered distribution, sorted by probability (stable
order), with one uniform number per row drawn from that request's own `torch.Generator` (see
`Uniforms`): a seeded request picks the same tokens whatever else is in the batch, because its
choice depends only on its own logits and its own random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNIFORMS_PER_DRAW = 32  # uniforms drawn from a request's generator at a time


class Uniforms:
    """A request's random stream: its own generator, seeded by the request's seed (or at random)."""

    def __init__(self, seed: int | None):
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._values: list[float] = []

    def next(self) -> float:
        if not self._values:
            self._values = torch.rand(UNIFORMS_PER_DRAW, generator=self._generator, dtype=torch.float64).tolist()[::-1]
        return self._values.pop()


@dataclass
class RowParams:
    """The sampling parameters of the rows of one forward, each a [rows] tensor on the logits' device."""

    temperature: torch.Tensor
    top_p: torch.Tensor
    top_k: torch.Tensor
    uniform: torch.Tensor
    frequency_penalty: torch.Tensor | None = None  # None: no row has penalties
    presence_penalty: torch.Tensor | None = None


def next_tokens(logits: torch.Tensor, params: RowParams | None, counts: torch.Tensor | None = None) -> torch.Tensor:
    """[rows, vocab] logits -> [rows] token ids. `params` None: every row is greedy and unpenalized.
    `counts` [rows, vocab]: how often each row generated each token so far (for the penalties)."""
    logits = logits.float()
    if params is None:
        return logits.argmax(-1)
    if params.frequency_penalty is not None and counts is not None:
        logits = logits - counts * params.frequency_penalty[:, None] - (counts > 0) * params.presence_penalty[:, None]
    tokens = logits.argmax(-1)
    sampled = (params.temperature > 0).nonzero()[:, 0]
    if sampled.numel():
        p = params
        tokens[sampled] = _sample(logits[sampled], p.temperature[sampled], p.top_p[sampled], p.top_k[sampled], p.uniform[sampled])
    return tokens


def _sample(logits, temperature, top_p, top_k, uniform) -> torch.Tensor:
    vocab = logits.shape[-1]
    logits = logits / temperature[:, None]
    # Only the k best are needed when every row has a top-k: a partial sort, far cheaper than a full one.
    width = int(top_k.max()) if bool((top_k > 0).all()) else vocab
    width = min(width, vocab)
    if width < vocab:
        values, order = torch.topk(logits, width, dim=-1)
    else:
        values, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    rank = torch.arange(width, device=logits.device)[None, :]
    keep = rank < torch.where(top_k > 0, top_k, width)[:, None]
    probs = torch.softmax(values.masked_fill(~keep, float("-inf")), dim=-1)
    # top-p: the smallest prefix whose mass reaches p (the most likely token always stays)
    keep &= (probs.cumsum(-1) - probs) < top_p[:, None]
    cdf = (probs * keep).cumsum(-1)
    target = (uniform.to(cdf.dtype) * cdf[:, -1])[:, None]
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=width - 1)
    return order.gather(1, pick)[:, 0]
