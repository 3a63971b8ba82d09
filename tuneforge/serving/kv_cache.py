"""The KV cache of continuous batching, the attention that reads it, and the prefix cache.

One forward per scheduling step carries every token the step computes, flattened into one
sequence (`input_ids` [1, N]): the next token of each decoding row, then chunks of the prompts
being prefilled. The linear layers see N tokens whatever rows they belong to (no padding, one pass
over the weights); only attention needs to know which row each token belongs to, and that is what
`StepPlan` tells `SlotCache` (where each token's key and value go) and `attention` (what each token
attends to).

Why not transformers' own caches: `DynamicCache` and `StaticCache` keep every row of a batch at
one shared length, so a request could only join a batch by re-padding everybody's cache. This cache
is a `transformers.Cache` (the models' forward calls its `update` as it calls theirs) holding one
tensor [slots, kv_heads, columns, head_dim] per layer; a token at position p of a row is written
at column p of that row's slot. The engine keeps the decoding rows in slots 0..D-1, so their
attention reads a view of the cache, not a gathered copy; rows still prefilling sit after them.
Capacity grows on demand and `release` frees it when the batch empties.

`attention` is registered with transformers' `AttentionInterface` (as vLLM/TGI backends register
theirs); the model's own forward calls it in every layer with the queries after RoPE and the
storage `update` returned:

  decode   the D decoding rows' queries [D, kv_heads, group, head_dim] (query heads grouped by
           their key/value head, as transformers' own SDPA path does for one query) against slots
           0..D-1, each row masked to its own length: one SDPA call;
  chunks   each prompt chunk (row, first position s, length c) against its row's columns 0..s+c-1,
           causal inside the chunk: one SDPA call per chunk.

`PrefixCache` keeps the keys and values of prompt prefixes already computed, in blocks of `BLOCK`
tokens, keyed by a digest of the adapter and every token up to the block's end (a block's keys
depend on all tokens before it, and on the adapter), and indexed by their parent block, so a prompt
can also take the first tokens of a block that continues its own prefix differently (a radix tree
with block-sized edges, matched to the token as SGLang's RadixAttention does). A prompt that starts
like an earlier one of the same adapter (the chat template's system prompt, a shared instruction)
gets those keys/values copied into its row, and only the rest is computed. Bounded in bytes,
least recently used evicted first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin

BLOCK = 16  # tokens per prefix-cache block
ATTENTION = "tuneforge_serving"  # the attention implementation name the engine sets on its model


@dataclass(frozen=True)
class Chunk:
    """Prompt tokens start..start+length-1 of the row in cache slot `slot`, at `offset` in the step's sequence."""

    slot: int
    start: int
    length: int
    offset: int
    mask: torch.Tensor  # [length, start + length] bool: query i sees columns 0..start+i


@dataclass
class StepPlan:
    """Where each token of one forward goes and what it sees."""

    slots: torch.Tensor  # [N] cache slot of each token
    cols: torch.Tensor  # [N] its column (= its position in its sequence)
    decode: int = 0  # tokens 0..decode-1 are one per slot 0..decode-1
    decode_cols: int = 0  # columns the decoding rows attend over (their longest length)
    decode_mask: torch.Tensor | None = None  # [decode, 1, 1, decode_cols] bool
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def slots_needed(self) -> int:
        return max([self.decode, *(c.slot + 1 for c in self.chunks)])

    @property
    def cols_needed(self) -> int:
        return max([self.decode_cols, *(c.start + c.length for c in self.chunks)])


def attention(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    serving_plan: StepPlan | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
):
    """transformers' attention-function signature: query [1, heads, N, head_dim]; key/value the whole
    storage `SlotLayer.update` returned. Returns [1, N, heads, head_dim].

    `sliding_window` (Mistral, Qwen2/3, Gemma 2/3, Phi-3, Cohere2: the layer's window, None on global
    layers): a query at position p sees keys at positions p - window + 1 .. p, transformers' rule
    (masking_utils.sliding_window_overlay); the cache keeps the older columns, which other layers read.
    `softcap` (Gemma 2): scores become softcap * tanh(scores / softcap) before the mask, which SDPA
    cannot do, so those layers take `_capped_attention`."""
    plan = serving_plan
    heads, head_dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    out = []
    if plan.decode:
        d, n = plan.decode, plan.decode_cols
        q = query[0, :, :d].transpose(0, 1).reshape(d, kv_heads, heads // kv_heads, head_dim)
        mask = plan.decode_mask
        if sliding_window is not None:
            cols = torch.arange(n, device=query.device)
            mask = mask & (cols[None, :] > plan.cols[:d, None] - sliding_window)[:, None, None]
        k, v = key[:d, :, :n], value[:d, :, :n]
        if softcap is None:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
        else:
            o = _capped_attention(q, k, v, mask, scaling, softcap)
        out.append(o.reshape(d, heads, head_dim))
    for c in plan.chunks:
        end = c.start + c.length
        q = query[:, :, c.offset : c.offset + c.length]
        k, v = key[c.slot : c.slot + 1, :, :end], value[c.slot : c.slot + 1, :, :end]
        mask = c.mask
        if sliding_window is not None:
            cols = torch.arange(end, device=query.device)
            rows = torch.arange(c.start, end, device=query.device)
            mask = mask & (cols[None, :] > rows[:, None] - sliding_window)
        if softcap is None:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=kv_heads != heads)
        else:
            group = heads // kv_heads
            o = _capped_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), mask, scaling, softcap)
        out.append(o[0].transpose(0, 1))
    return torch.cat(out)[None], None


def _capped_attention(q, k, v, mask, scaling, softcap: float) -> torch.Tensor:
    """softmax(mask(softcap * tanh(q k^T * scaling / softcap))) v, the softmax in fp32 (transformers' eager path)."""
    scores = (q @ k.transpose(-1, -2)) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


AttentionInterface.register(ATTENTION, attention)


class _SlotLayer(CacheLayerMixin):
    is_sliding = False

    def __init__(self, cache: SlotCache):
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True  # storage is (re)allocated by `_reserve`, sized to the plan

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        p = self.cache.plan
        self._reserve(key_states, value_states, p.slots_needed, p.cols_needed)
        self.keys[p.slots, :, p.cols] = key_states[0].transpose(0, 1)
        self.values[p.slots, :, p.cols] = value_states[0].transpose(0, 1)
        return self.keys, self.values

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, slots: int, cols: int) -> None:
        have = (0, 0) if self.keys is None else (self.keys.shape[0], self.keys.shape[2])
        if slots <= have[0] and cols <= have[1]:
            return
        # grow only what is short: slots by doubling, columns by half again, rounded up to 64
        new_slots = have[0] if slots <= have[0] else max(slots, have[0] * 2, 4)
        new_cols = have[1] if cols <= have[1] else -(-max(cols, have[1] + have[1] // 2) // 64) * 64
        old = (self.keys, self.values)
        # [1, kv_heads, tokens, head_dim] (a forward's) or [kv_heads, tokens, head_dim] (a prefix block's)
        self.keys, self.values = (
            torch.zeros(new_slots, s.shape[-3], new_cols, s.shape[-1], dtype=s.dtype, device=s.device)
            for s in (key_states, value_states)
        )
        if old[0] is not None:
            self.keys[: have[0], :, : have[1]] = old[0]
            self.values[: have[0], :, : have[1]] = old[1]
        self.is_initialized = True

    def move(self, src: int, dst: int) -> None:
        # A slot past the storage belongs to a row admitted since the last forward: nothing of it is
        # stored yet, so there is nothing to copy (its prefill writes it wherever it then sits).
        if self.keys is not None and src < self.keys.shape[0]:
            self.keys[dst] = self.keys[src]
            self.values[dst] = self.values[src]

    def swap(self, a: int, b: int) -> None:
        if self.keys is not None:
            self._reserve(self.keys, self.values, max(a, b) + 1, self.keys.shape[2])
            self.keys[[a, b]] = self.keys[[b, a]]
            self.values[[a, b]] = self.values[[b, a]]

    def write(self, slot: int, col: int, kv: torch.Tensor) -> None:
        """Put kv [2, heads, n, head_dim] in slot `slot`, columns col..col+n-1."""
        self._reserve(kv[0], kv[1], slot + 1, col + kv.shape[2])
        self.keys[slot, :, col : col + kv.shape[2]] = kv[0]
        self.values[slot, :, col : col + kv.shape[2]] = kv[1]

    def read(self, slot: int, col: int, n: int) -> torch.Tensor:
        return torch.stack((self.keys[slot, :, col : col + n], self.values[slot, :, col : col + n]))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.plan.cols_needed, 0

    def get_seq_length(self) -> int:
        return self.cache.plan.cols_needed

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False


class SlotCache(Cache):
    def __init__(self, num_layers: int):
        self.plan = StepPlan(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src` over slot `dst` (the row in src takes dst's place)."""
        for layer in self.layers:
            layer.move(src, dst)

    def swap(self, a: int, b: int) -> None:
        for layer in self.layers:
            layer.swap(a, b)

    def write_prefix(self, slot: int, col: int, pieces: list[torch.Tensor]) -> None:
        """Copy prefix-cache pieces ([layers, 2, heads, n, head_dim] each) into a slot from column `col` on."""
        kv = torch.cat(pieces, dim=3)
        for layer, layer_kv in zip(self.layers, kv):
            layer.write(slot, col, layer_kv)

    def read_block(self, slot: int, col: int) -> torch.Tensor:
        return torch.stack([layer.read(slot, col, BLOCK) for layer in self.layers])

    def release(self) -> None:
        """Free the memory (the batch is empty)."""
        for layer in self.layers:
            layer.reset()

    def nbytes(self) -> int:
        live = [layer for layer in self.layers if layer.keys is not None]
        return sum(t.numel() * t.element_size() for layer in live for t in (layer.keys, layer.values))


@dataclass
class _Block:
    kv: torch.Tensor  # [layers, 2, kv_heads, BLOCK, head_dim]
    parent: bytes
    tokens: tuple[int, ...]


class PrefixCache:
    """Blocks of prompt keys/values by a digest of (adapter id, every token up to the block's end), each
    also listed under its parent block's digest; LRU within `max_bytes`. Only the decode thread uses it."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()
        self._children: dict[bytes, set[bytes]] = {}

    @staticmethod
    def chain(adapter: str | None, prompt: list[int]) -> list[bytes]:
        """[root, key of block 0, key of block 1, ...]: the adapter's root digest, then one key per whole
        block of the prompt short of its last token (whose logits are always computed). Block j's parent
        is chain[j]."""
        chain = [hashlib.blake2b((adapter or "").encode(), digest_size=16).digest()]
        for end in range(BLOCK, len(prompt), BLOCK):
            tokens = array("q", prompt[end - BLOCK : end]).tobytes()
            chain.append(hashlib.blake2b(chain[-1] + tokens, digest_size=16).digest())
        return chain

    def match(self, chain: list[bytes], prompt: list[int], first: int, limit: int) -> list[torch.Tensor]:
        """The cached keys/values of prompt tokens first.. (a block boundary) up to at most `limit`:
        whole blocks while they are cached, then the longest run of tokens that a cached sibling of the
        first missing block shares with the prompt. Pieces [layers, 2, kv_heads, n, head_dim]."""
        pieces = []
        for j in range(first // BLOCK, len(chain) - 1):
            room = min(BLOCK, limit - j * BLOCK)
            if room <= 0:
                break
            block = self._blocks.get(chain[j + 1])
            if block is not None and room == BLOCK:
                self._blocks.move_to_end(chain[j + 1])
                pieces.append(block.kv)
                continue
            key, shared = self._best_sibling(chain[j], prompt[j * BLOCK : j * BLOCK + room])
            if shared:
                self._blocks.move_to_end(key)
                pieces.append(self._blocks[key].kv[:, :, :, :shared])
            break
        return pieces

    def _best_sibling(self, parent: bytes, tokens: list[int]) -> tuple[bytes | None, int]:
        best, shared = None, 0
        for key in self._children.get(parent, ()):
            n = _common_prefix(self._blocks[key].tokens, tokens)
            if n > shared:
                best, shared = key, n
        return best, shared

    def wants(self, key: bytes) -> bool:
        return self.max_bytes > 0 and key not in self._blocks

    def add(self, key: bytes, parent: bytes, tokens: list[int], kv: torch.Tensor) -> None:
        size = kv.numel() * kv.element_size()
        if size > self.max_bytes:
            return
        while self.bytes + size > self.max_bytes:
            old_key, old = self._blocks.popitem(last=False)
            self._children[old.parent].discard(old_key)
            if not self._children[old.parent]:
                del self._children[old.parent]
            self.bytes -= old.kv.numel() * old.kv.element_size()
        self._blocks[key] = _Block(kv, parent, tuple(tokens))
        self._children.setdefault(parent, set()).add(key)
        self.bytes += size


def shared_prefix(chain_a: list[bytes], prompt_a: list[int], chain_b: list[bytes], prompt_b: list[int]) -> int:
    """How many first tokens two prompts of one adapter share (their chains are compared block by block first)."""
    if chain_a[0] != chain_b[0]:
        return 0
    blocks = 0
    while blocks + 1 < min(len(chain_a), len(chain_b)) and chain_a[blocks + 1] == chain_b[blocks + 1]:
        blocks += 1
    start = blocks * BLOCK
    return start + _common_prefix(prompt_a[start : start + BLOCK], prompt_b[start : start + BLOCK])


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
