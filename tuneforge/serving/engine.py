"""The serving engine: one base model, many adapters, continuous batching on one decode thread.

`Engine.submit` (any thread) checks and tokenizes a request, reads its adapter if it is not
resident, and queues it; a full queue is `QueueFull`. The decode thread runs `step` while there
is work:

  1. drop cancelled requests;
  2. admit waiting requests, oldest first, while rows are free (`max_batch`), the prompts fit the
     step's prefill budget (`prefill_tokens`) and their adapter has (or gets) a slot;
  3. prefill the newcomers: prompts of similar length go together, left-padded, into the free
     rows of the KV cache, each starting from the longest prefix the prefix cache holds for its
     adapter (only the rest is computed); their first token is sampled;
  4. decode one token for every running row, whatever its adapter and its length, in one forward;
  5. hand each row's new text to its stream; finished rows leave, the last row takes their place.

So requests join and leave between decode steps, and no row waits for another to finish. The
model is transformers' own forward; the engine only supplies the cache (`SlotCache`), per-row
positions, a 4-D attention mask that says which cache columns each row sees, and which adapter
each row uses (`AdapterRows`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from tuneforge.engine.precision import pick_device, pick_dtype
from tuneforge.engine.weights import Weights, load_model_and_tokenizer
from tuneforge.errors import InvalidParameter
from tuneforge.serving import adapter_layers
from tuneforge.serving.adapter_store import AdapterSlots, ServedAdapter, read_adapter
from tuneforge.serving.kv_cache import BLOCK, PrefixCache, SlotCache
from tuneforge.serving.requests import Completion, EngineClosed, FinishReason, PromptTooLong, QueueFull, Request, ServingError
from tuneforge.serving.sampling import RowParams, Uniforms, next_tokens
from tuneforge.serving.stream import Stream
from tuneforge.serving.text import TextAssembler

log = logging.getLogger(__name__)

PAD_WASTE = 1.25  # a prefill group's padded tokens stay within this factor of its real tokens


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | bf16 | fp32: the base's matrix products (tuneforge.engine.precision)
    max_batch: int = 64  # rows decoded together
    max_queue: int = 256  # requests waiting for a row; one more is QueueFull
    max_adapters: int = 8  # adapters resident at once (LRU)
    max_context: int | None = None  # prompt + completion tokens; None: the model's max_position_embeddings
    prefill_tokens: int = 1024  # prompt tokens prefilled per step (a longer prompt goes alone)
    prefix_cache_mb: int = 256  # keys/values of prompt prefixes kept for reuse; 0 disables
    threads: int | None = None  # torch intra-op threads (process-wide); None: torch's default


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    adapters: tuple[str, ...]  # resident, least recently used first
    steps: int
    generated_tokens: int
    peak_running: int  # most rows decoded together so far
    kv_cache_bytes: int
    prefix_cache_bytes: int
    prefix_hit_tokens: int  # prompt tokens taken from the prefix cache instead of computed


@dataclass
class _Row:
    request: Request
    prompt_ids: list[int]
    stream: Stream
    assembler: TextAssembler
    max_new: int
    adapter: ServedAdapter | None = None  # read at submit when not resident
    uniforms: Uniforms | None = None
    prefix_keys: list[bytes] = field(default_factory=list)  # PrefixCache keys of the prompt's whole blocks
    cached: list[torch.Tensor] = field(default_factory=list)  # the blocks found in the prefix cache at admission
    slot: int = 0  # adapter slot (0: the base)
    start: int = 0  # first KV-cache column (left padding before it)
    pos: int = 0  # position of `last`, the token the next decode step feeds
    last: int = 0
    generated: list[int] = field(default_factory=list)

    @property
    def to_compute(self) -> int:
        """Prompt tokens the prefill has to compute."""
        return len(self.prompt_ids) - BLOCK * len(self.cached)

    @property
    def penalized(self) -> bool:
        return self.request.frequency_penalty != 0 or self.request.presence_penalty != 0


class Engine:
    def __init__(self, weights: Weights, config: EngineConfig = EngineConfig(), *, start: bool = True):
        """Load the base and start the decode thread (`start=False`: no thread; the caller drives
        `step()` itself, which tests use to decide exactly when each request joins)."""
        self.weights, self.config = weights, config
        self.device = pick_device(config.device)
        model, tokenizer = load_model_and_tokenizer(weights, pick_dtype(config.precision, self.device), self.device)
        model.requires_grad_(False)
        model.eval()
        model.set_attn_implementation("sdpa")  # the boolean 4-D masks below are SDPA's
        self.model, self.tokenizer = model, tokenizer
        self._rows_ctx, self._layers = adapter_layers.attach(model)
        self._slots = AdapterSlots(self._layers, config.max_adapters)
        self._cache = SlotCache(model.config.num_hidden_layers)
        self._prefixes = PrefixCache(config.prefix_cache_mb * 2**20)
        self.max_context = min(model.config.max_position_embeddings, config.max_context or 1 << 62)
        self._eos = _eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id
        self._counts: torch.Tensor | None = None  # [rows, vocab] generated-token counts, for penalties
        self._running: list[_Row] = []
        self._waiting: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._tokenizer_lock = threading.Lock()
        self._closed: str | None = None  # why submit is refused
        self._steps = self._generated = self._peak_running = self._prefix_hits = 0
        self._thread = threading.Thread(target=self._loop, name=f"tuneforge-serving-{weights.description}", daemon=True)
        if start:
            self._thread.start()

    # -- the caller's side ---------------------------------------------------------------------------

    def submit(self, request: Request) -> Stream:
        """Queue a request; its Stream yields the text as it is decoded. Raises InvalidParameter,
        PromptTooLong, AdapterUnavailable, AdapterInvalid, QueueFull or EngineClosed."""
        if self._closed:
            raise EngineClosed(self._closed)
        request.validate()
        ids = self._encode(request)
        if len(ids) >= self.max_context:
            raise PromptTooLong(len(ids), self.max_context)
        adapter = None
        if request.adapter is not None and not self._slots.resident(request.adapter.id):
            adapter = read_adapter(request.adapter, self._layers)
        room = self.max_context - len(ids)
        max_new = room if request.max_tokens is None else min(request.max_tokens, room)
        stream = Stream(len(ids), on_cancel=self._wake)
        assembler = TextAssembler(self.tokenizer.backend_tokenizer, tuple(request.stop))
        row = _Row(request, ids, stream, assembler, max_new, adapter, None if request.greedy else Uniforms(request.seed))
        if self.config.prefix_cache_mb:
            row.prefix_keys = PrefixCache.block_keys(request.adapter and request.adapter.id, ids)
        with self._cond:
            if self._closed:
                raise EngineClosed(self._closed)
            if len(self._waiting) >= self.config.max_queue:
                raise QueueFull(len(self._waiting))
            self._waiting.append(row)
            self._cond.notify()
        return stream

    def generate(self, request: Request) -> Completion:
        """submit() and wait for the whole completion."""
        return self.submit(request).result()

    def count_tokens(self, request: Request) -> int:
        """The prompt tokens `request` would take (chat template included)."""
        request.validate()
        return len(self._encode(request))

    def stats(self) -> EngineStats:
        with self._cond:
            waiting = len(self._waiting)
        adapters = tuple(self._slots.ids())
        return EngineStats(
            running=len(self._running), waiting=waiting, adapters=adapters, steps=self._steps, generated_tokens=self._generated,
            peak_running=self._peak_running, kv_cache_bytes=self._cache.nbytes(), prefix_cache_bytes=self._prefixes.bytes,
            prefix_hit_tokens=self._prefix_hits,
        )

    def shutdown(self, timeout: float | None = 30) -> None:
        """Refuse new requests, end the running and waiting ones ("cancelled"), stop the thread."""
        with self._cond:
            self._closed = self._closed or "the model is shutting down"
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self._end_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _encode(self, request: Request) -> list[int]:
        with self._tokenizer_lock:
            if request.prompt is not None:
                return self.tokenizer(request.prompt).input_ids
            try:
                text = self.tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
            except Exception as err:  # the template's own checks (e.g. roles must alternate) raise jinja2 errors
                roles = [m["role"] for m in request.messages]
                raise InvalidParameter("messages", roles, f"rejected by the model's chat template: {err}") from err
            return self.tokenizer(text, add_special_tokens=False).input_ids

    # -- the decode thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        with torch.inference_mode():
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or self._waiting or self._running)
                    if self._closed:
                        break
                try:
                    self.step()
                except Exception:  # a bug or out of memory: fail what was in flight, keep serving the next requests
                    log.exception("serving step failed")
                    self._end_all(fail=ServingError("the model failed while generating; the server log has the details"))
        self._end_all()

    def step(self) -> None:
        """One scheduling step (the decode thread's; public for benchmarks that drive it by hand)."""
        self._drop_cancelled()
        joiners = self._admit()
        for group in _prefill_groups(joiners):
            self._prefill(group)
        if self._running:
            self._peak_running = max(self._peak_running, len(self._running))
            self._decode()
        self._steps += 1

    def _drop_cancelled(self) -> None:
        for i in reversed(range(len(self._running))):
            if self._running[i].stream.cancelled:
                self._finish(i, "cancelled")
        with self._cond:
            cancelled = [r for r in self._waiting if r.stream.cancelled]
            for row in cancelled:
                self._waiting.remove(row)
        for row in cancelled:
            row.stream.finish(self._completion(row, "cancelled"))

    def _admit(self) -> list[_Row]:
        room, budget = self.config.max_batch - len(self._running), self.config.prefill_tokens
        with self._cond:
            candidates = list(self._waiting)
        joiners: list[_Row] = []
        for row in candidates:
            if len(joiners) == room:
                break
            row.cached = self._prefixes.match(row.prefix_keys)
            if joiners and row.to_compute > budget:
                row.cached = []
                break
            try:
                slot = 0 if row.request.adapter is None else self._slots.acquire(row.request.adapter, row.adapter)
            except ServingError as err:  # the adapter changed on disk or was evicted and is now unreadable
                self._unqueue(row)
                row.stream.fail(err)
                continue
            if slot is None:  # every adapter slot is pinned by running rows: wait for one to free up
                continue
            row.slot, row.adapter = slot, None
            self._unqueue(row)
            joiners.append(row)
            budget -= row.to_compute
        return joiners

    def _unqueue(self, row: _Row) -> None:
        with self._cond:
            self._waiting.remove(row)

    def _prefill(self, group: list[_Row]) -> None:
        """Left-padded prompts end at column `width` - 1; the cached prefixes are copied in, and only the
        last `todo` columns (the longest uncached part in the group) go through the model."""
        first, dev = len(self._running), self.device
        width, todo = max(len(r.prompt_ids) for r in group), max(r.to_compute for r in group)
        for i, r in enumerate(group):
            r.start, r.pos = width - len(r.prompt_ids), len(r.prompt_ids)
            if r.cached:
                self._cache.write_prefix(first + i, r.start, r.cached)
                self._prefix_hits += BLOCK * len(r.cached)
        ids = torch.tensor([([self._pad] * r.start + r.prompt_ids)[width - todo :] for r in group], device=dev)
        start = torch.tensor([r.start for r in group], device=dev)
        key, query = torch.arange(width, device=dev), torch.arange(width - todo, width, device=dev)
        positions = (query[None, :] - start[:, None]).clamp(min=0)
        # row b's query column q sees key column k when start_b <= k <= q; padding sees itself (no empty softmax rows)
        mask = (key[None, None, :] >= start[:, None, None]) & (key[None, None, :] <= query[None, :, None])
        mask |= key[None, None, :] == query[None, :, None]
        self._running.extend(group)
        self._cache.plan_prefill(first, len(group), width, offset=width - todo)
        logits = self._forward(group, ids, positions, mask[:, None], logits_to_keep=1)
        self._remember_prefixes(first, group)
        self._advance(first, logits, joining=True)

    def _remember_prefixes(self, first: int, group: list[_Row]) -> None:
        for i, r in enumerate(group):
            for j, key in enumerate(r.prefix_keys[len(r.cached) :], start=len(r.cached)):
                if self._prefixes.wants(key):
                    self._prefixes.add(key, self._cache.read_block(first + i, r.start + j * BLOCK))
            r.cached = []

    def _decode(self) -> None:
        rows, dev = self._running, self.device
        ids = torch.tensor([[r.last] for r in rows], device=dev)
        pos = torch.tensor([r.pos for r in rows], device=dev)
        start = torch.tensor([r.start for r in rows], device=dev)
        kv_len = max(r.start + r.pos for r in rows) + 1
        col = torch.arange(kv_len, device=dev)
        mask = (col[None, :] >= start[:, None]) & (col[None, :] <= (start + pos)[:, None])
        self._cache.plan_decode(len(rows), start + pos, kv_len)
        logits = self._forward(rows, ids, pos[:, None], mask[:, None, None], logits_to_keep=0)
        for r in rows:
            r.pos += 1
        self._advance(0, logits, joining=False)

    def _forward(self, rows: list[_Row], ids, positions, mask, logits_to_keep: int) -> torch.Tensor:
        slots = [r.slot for r in rows]
        methods = {self._slots.method_of(s) for s in slots}
        self._rows_ctx.set(torch.tensor(slots, device=self.device), self._slots.slots, "LORA" in methods, "IA3" in methods)
        try:
            out = self.model(
                input_ids=ids, position_ids=positions, attention_mask=mask, cache=self._cache, logits_to_keep=logits_to_keep
            )
        finally:
            self._rows_ctx.clear()
        return out.logits[:, -1]

    def _advance(self, first: int, logits: torch.Tensor, joining: bool) -> None:
        """Sample rows first.. of the running batch from their logits, stream the text, retire finished rows."""
        rows = self._running[first : first + logits.shape[0]]
        counts = self._penalty_counts(first, rows, logits.shape[-1], joining)
        tokens = next_tokens(logits, self._row_params(rows), counts)
        if counts is not None:
            counts[torch.arange(len(rows), device=self.device), tokens] += 1
        finished: list[tuple[int, FinishReason]] = []
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            row.generated.append(token)
            row.last = token
            row.stream.completion_tokens = len(row.generated)
            reason = self._consume(row, token)
            if reason is not None:
                finished.append((first + i, reason))
        self._generated += len(rows)
        for index, reason in reversed(finished):
            self._finish(index, reason)

    def _consume(self, row: _Row, token: int) -> FinishReason | None:
        if token in self._eos:
            return "stop"
        delta, stopped = row.assembler.add(token)
        if delta:
            row.stream.put(delta)
        if stopped:
            return "stop"
        return "length" if len(row.generated) >= row.max_new else None

    def _row_params(self, rows: list[_Row]) -> RowParams | None:
        if all(r.request.greedy and not r.penalized for r in rows):
            return None
        dev, reqs = self.device, [r.request for r in rows]
        params = RowParams(
            temperature=torch.tensor([q.temperature for q in reqs], device=dev),
            top_p=torch.tensor([q.top_p for q in reqs], device=dev),
            top_k=torch.tensor([q.top_k for q in reqs], device=dev),
            uniform=torch.tensor([r.uniforms.next() if r.uniforms else 0.0 for r in rows], device=dev),
        )
        if any(r.penalized for r in rows):
            params.frequency_penalty = torch.tensor([q.frequency_penalty for q in reqs], device=dev)
            params.presence_penalty = torch.tensor([q.presence_penalty for q in reqs], device=dev)
        return params

    def _penalty_counts(self, first: int, rows: list[_Row], vocab: int, joining: bool) -> torch.Tensor | None:
        """The counts of rows first..; allocated for the whole batch once a penalized row runs, zero for newcomers."""
        if self._counts is None and not any(r.penalized for r in rows):
            return None
        need = len(self._running)
        if self._counts is None or self._counts.shape[0] < need:
            grown = torch.zeros(max(need, 2 * (0 if self._counts is None else self._counts.shape[0])), vocab, device=self.device)
            if self._counts is not None:
                grown[: self._counts.shape[0]] = self._counts
            self._counts = grown
        if joining:
            self._counts[first : first + len(rows)].zero_()
        return self._counts[first : first + len(rows)]

    def _finish(self, index: int, reason: FinishReason) -> None:
        row = self._running[index]
        tail = row.assembler.flush()  # text held back as a possible stop sequence: it cannot become one now
        if tail:
            row.stream.put(tail)
        last = len(self._running) - 1
        if index != last:  # keep the running rows packed at the front of the cache
            self._running[index] = self._running[last]
            self._cache.move_row(last, index)
            if self._counts is not None:
                self._counts[index] = self._counts[last]
        self._running.pop()
        if not self._running:
            self._cache.release()
            self._counts = None
        if row.request.adapter is not None:
            self._slots.release(row.request.adapter.id)
        row.stream.finish(self._completion(row, reason))

    def _completion(self, row: _Row, reason: FinishReason) -> Completion:
        return Completion(row.assembler.text, reason, len(row.prompt_ids), len(row.generated), tuple(row.generated))

    def _end_all(self, fail: ServingError | None = None) -> None:
        """End every request in flight: cancelled at shutdown, or failed after an error."""
        for i in reversed(range(len(self._running))):
            if fail is None:
                self._finish(i, "cancelled")
                continue
            row = self._running[i]
            row.stream.fail(fail)
            if row.request.adapter is not None:
                self._slots.release(row.request.adapter.id)
        if fail is not None:
            self._running.clear()
            self._cache.release()
            self._counts = None
            return
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for row in waiting:
            row.stream.finish(self._completion(row, "cancelled"))


def _prefill_groups(rows: list[_Row]) -> list[list[_Row]]:
    """Newcomers by the prompt tokens they need computed, cut into groups whose padding stays within PAD_WASTE."""
    groups: list[list[_Row]] = []
    for row in sorted(rows, key=lambda r: r.to_compute):
        group = groups[-1] if groups else None
        real = row.to_compute + (sum(r.to_compute for r in group) if group else 0)
        if group and row.to_compute * (len(group) + 1) <= PAD_WASTE * real:
            group.append(row)
        else:
            groups.append([row])
    return groups


def _eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a turn: the generation config's (Llama 3 lists several) and the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
