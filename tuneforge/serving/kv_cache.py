"""The KV cache of continuous batching: one row ("slot") per running sequence, each at its own length.

Why not transformers' own caches: `DynamicCache` and `StaticCache` keep every row of a batch at
one shared length (one `cumulative_length`, one write position), so a request could only join a
batch by re-padding everybody's cache, and leave it by copying the whole cache. This cache is a
`transformers.Cache` (the models' forward calls its `update` exactly as it calls theirs), with
one tensor [slots, kv_heads, columns, head_dim] per layer and a write plan set before each forward:

  decode   rows 0..n-1 each write one new column at their own position `cols[row]`;
  prefill  rows first..first+count-1 write columns 0..width-1 (left-padded prompts).

`update` then returns views of rows [first, first+n) and columns [0, kv_len): no copy, because
the engine keeps its running rows packed at the front (a row that leaves is replaced by the last
one, `move_row`). Which columns a row may attend to is the engine's 4-D attention mask; memory
never read by a mask is zeros, so masked-out attention weights (exact zeros) never meet a NaN.
Capacity grows on demand (slots and columns), and `release` frees it when the batch empties.

`PrefixCache` keeps the keys and values of prompt prefixes already computed, in blocks of
`BLOCK` tokens, keyed by the adapter and every token up to the block's end (a block's keys depend on
all tokens before it, and on the adapter). A prompt that starts like an earlier one of the same
adapter (the chat template's system prompt, a shared instruction) has those blocks copied into its
row and only the rest prefilled: vLLM's automatic prefix caching, in whole blocks, bounded in bytes,
least recently used evicted first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


BLOCK = 16  # tokens per prefix-cache block


@dataclass
class _Plan:
    first: int = 0  # first row the forward touches
    count: int = 0  # rows in the forward
    kv_len: int = 0  # columns returned to attention
    cols: torch.Tensor | None = None  # decode: the column each row writes; None: prefill writes offset..kv_len-1
    offset: int = 0  # prefill: first column written (the columns before it hold cached prefixes)


class _SlotLayer(CacheLayerMixin):
    is_sliding = False

    def __init__(self, plan: _Plan):
        super().__init__()
        self.plan = plan

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True  # storage is (re)allocated by `_reserve`, sized to the plan

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        p = self.plan
        end = p.first + p.count
        self._reserve(key_states, value_states, end, p.kv_len)
        if p.cols is None:
            self.keys[p.first : end, :, p.offset : p.kv_len] = key_states
            self.values[p.first : end, :, p.offset : p.kv_len] = value_states
        else:
            rows = torch.arange(p.first, end, device=key_states.device)
            self.keys[rows, :, p.cols] = key_states[:, :, 0]
            self.values[rows, :, p.cols] = value_states[:, :, 0]
        return self.keys[p.first : end, :, : p.kv_len], self.values[p.first : end, :, : p.kv_len]

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, slots: int, cols: int) -> None:
        have = (0, 0) if self.keys is None else (self.keys.shape[0], self.keys.shape[2])
        if slots <= have[0] and cols <= have[1]:
            return
        # grow only what is short: slots by doubling, columns by half again, rounded up to 64
        new_slots = have[0] if slots <= have[0] else max(slots, have[0] * 2, 4)
        new_cols = have[1] if cols <= have[1] else -(-max(cols, have[1] + have[1] // 2) // 64) * 64
        old = (self.keys, self.values)
        self.keys, self.values = (
            torch.zeros(new_slots, s.shape[1], new_cols, s.shape[3], dtype=s.dtype, device=s.device)
            for s in (key_states, value_states)
        )
        if old[0] is not None:
            self.keys[: have[0], :, : have[1]] = old[0]
            self.values[: have[0], :, : have[1]] = old[1]
        self.is_initialized = True

    def move_row(self, src: int, dst: int) -> None:
        if self.keys is not None:
            self.keys[dst] = self.keys[src]
            self.values[dst] = self.values[src]

    def write(self, row: int, col: int, kv: torch.Tensor) -> None:
        """Put kv [2, heads, n, head_dim] in row `row`, columns col..col+n-1."""
        self._reserve(kv[0][None], kv[1][None], row + 1, col + kv.shape[2])
        self.keys[row, :, col : col + kv.shape[2]] = kv[0]
        self.values[row, :, col : col + kv.shape[2]] = kv[1]

    def read(self, row: int, col: int, n: int) -> torch.Tensor:
        return torch.stack((self.keys[row, :, col : col + n], self.values[row, :, col : col + n]))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.plan.kv_len, 0

    def get_seq_length(self) -> int:
        return self.plan.kv_len

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False


class SlotCache(Cache):
    def __init__(self, num_layers: int):
        self.plan = _Plan()
        super().__init__(layers=[_SlotLayer(self.plan) for _ in range(num_layers)])

    def plan_prefill(self, first: int, count: int, width: int, offset: int = 0) -> None:
        p = self.plan
        p.first, p.count, p.kv_len, p.cols, p.offset = first, count, width, None, offset

    def plan_decode(self, count: int, cols: torch.Tensor, kv_len: int) -> None:
        self.plan.first, self.plan.count, self.plan.kv_len, self.plan.cols = 0, count, kv_len, cols

    def move_row(self, src: int, dst: int) -> None:
        for layer in self.layers:
            layer.move_row(src, dst)

    def write_prefix(self, row: int, col: int, blocks: list[torch.Tensor]) -> None:
        """Copy prefix-cache blocks ([layers, 2, heads, BLOCK, head_dim] each) into a row from column `col` on."""
        kv = torch.cat(blocks, dim=3)
        for layer, layer_kv in zip(self.layers, kv):
            layer.write(row, col, layer_kv)

    def read_block(self, row: int, col: int) -> torch.Tensor:
        return torch.stack([layer.read(row, col, BLOCK) for layer in self.layers])

    def release(self) -> None:
        """Free the memory (the batch is empty)."""
        for layer in self.layers:
            layer.reset()

    def nbytes(self) -> int:
        live = [layer for layer in self.layers if layer.keys is not None]
        return sum(t.numel() * t.element_size() for layer in live for t in (layer.keys, layer.values))


class PrefixCache:
    """Blocks of prompt keys/values, by a digest of (adapter id, every token up to the block's end); LRU
    within `max_bytes`. Only the decode thread uses it."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._blocks: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def block_keys(adapter: str | None, prompt: list[int]) -> list[bytes]:
        """One key per whole block of the prompt, short of its last token (whose logits are always computed)."""
        keys, digest = [], hashlib.blake2b((adapter or "").encode(), digest_size=16).digest()
        for end in range(BLOCK, len(prompt), BLOCK):
            tokens = array("q", prompt[end - BLOCK : end]).tobytes()
            digest = hashlib.blake2b(digest + tokens, digest_size=16).digest()
            keys.append(digest)
        return keys

    def match(self, keys: list[bytes]) -> list[torch.Tensor]:
        """The cached blocks a prompt starts with."""
        blocks = []
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            blocks.append(block)
        return blocks

    def wants(self, key: bytes) -> bool:
        return self.max_bytes > 0 and key not in self._blocks

    def add(self, key: bytes, block: torch.Tensor) -> None:
        size = block.numel() * block.element_size()
        if size > self.max_bytes:
            return
        while self.bytes + size > self.max_bytes:
            _, old = self._blocks.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self._blocks[key] = block
        self.bytes += size
