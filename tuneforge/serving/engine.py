"""The serving engine: one base model, many adapters, continuous batching with chunked prefill on one decode thread.

`Engine.submit` (any thread) checks and tokenizes a request, reads its adapter if it is not
resident, and queues it; a full queue is `QueueFull`, and so is a request that is not expected to
get a row within `max_wait_s` (`WaitTooLong`, see "Admission" below). The decode thread runs `step`
while there is work:

  1. drop cancelled requests;
  2. admit waiting requests, oldest first, while rows are free (`max_batch`) and their adapter has
     (or gets) a slot; an admitted request is prefilling; end those still waiting past their deadline;
  3. plan one forward: the next token of every decoding row, then chunks of the prefilling prompts,
     oldest first, within the step's prompt-token budget (`prefill_tokens`). A prompt starts from
     the longest prefix the prefix cache holds for its adapter (only the rest is computed); a prompt
     that shares more with one being prefilled right now waits for that one's blocks instead of
     computing them twice;
  4. run it: every token of the step in one forward (kv_cache.py), whatever its row, adapter, length
     or phase;
  5. sample the next token of every decoding row and of every prompt whose last chunk was in this
     step, hand each row's new text to its stream, retire finished rows.

So requests join and leave between steps, no row waits for another to finish, and a long prompt
costs the running rows a few chunk-sized steps instead of one step as long as the whole prompt
(Sarathi-Serve's chunked prefill, vLLM's default scheduler). The model is transformers' own
forward; the engine supplies the cache (`SlotCache`), the step plan its attention reads
(`StepPlan`), per-token positions, and which adapter each token uses (`AdapterRows`).

Admission: a queue bounded only by its length lets a request wait for minutes behind the rows ahead
of it while its client hears nothing. So `submit` estimates the wait: the decode thread publishes,
after every step, how many more steps each running row is expected to hold its row (its prompt's
prefill steps plus the tokens it may generate, at most the recent average per request), and the
measured time of a step; `submit` hands the rows as they free up to the requests queued ahead, in
order, and the new request gets the next one. Above `max_wait_s` it is refused at once
(`WaitTooLong`, HTTP 429 with Retry-After) instead of queued. The estimate can be wrong (requests
run longer than the recent ones did, steps slow down), so a request still waiting for a row after
START_DEADLINE x `max_wait_s` is ended (`StartTimeout`): nothing waits unboundedly.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from tuneforge.engine.precision import pick_device, pick_dtype
from tuneforge.engine.weights import Weights, load_model_and_tokenizer
from tuneforge.errors import InvalidParameter
from tuneforge.serving import adapter_layers
from tuneforge.serving.adapter_store import AdapterSlots, ServedAdapter, read_adapter
from tuneforge.serving.kv_cache import ATTENTION, BLOCK, Chunk, PrefixCache, SlotCache, StepPlan, shared_prefix
from tuneforge.serving.requests import (
    Completion,
    EngineClosed,
    FinishReason,
    PromptTooLong,
    QueueFull,
    Request,
    ServingError,
    StartTimeout,
    WaitTooLong,
)
from tuneforge.serving.sampling import RowParams, Uniforms, next_tokens
from tuneforge.serving.stream import Stream
from tuneforge.serving.text import TextAssembler

log = logging.getLogger(__name__)

# Prompt tokens per step when EngineConfig.prefill_tokens is None. Each step's time is its decode rows
# plus this many prompt tokens, so it bounds the inter-token latency the running rows see while prompts
# are prefilled; larger is fewer passes over the weights per prompt. A CPU computes a few hundred
# tokens a second where a GPU computes tens of thousands (bench/RESULTS.md has the measured trade-off).
DEFAULT_PREFILL_TOKENS = {"cpu": 64, "cuda": 2048}
# How long a request may wait for a row before it starts, by default (seconds): a client that hears
# nothing for longer gives up (the openai SDK's and OCI's clients time out a read after 60 s or more,
# a person much sooner), and a 429 with Retry-After tells it when to come back instead.
DEFAULT_MAX_WAIT_S = 30.0
START_DEADLINE = 2  # x max_wait_s: a queued request that has not started by then is ended (StartTimeout)
_EMA = 0.1  # weight of the newest sample in the step-time and per-request averages


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | bf16 | fp32: the base's matrix products (tuneforge.engine.precision)
    max_batch: int = 64  # rows (requests) in flight together, prefilling or decoding
    max_queue: int = 256  # requests waiting for a row; one more is QueueFull
    max_wait_s: float | None = DEFAULT_MAX_WAIT_S  # expected wait for a row above this: WaitTooLong; None: no bound
    max_adapters: int = 8  # adapters resident at once (LRU)
    max_context: int | None = None  # prompt + completion tokens; None: the model's max_position_embeddings
    prefill_tokens: int | None = None  # prompt tokens computed per step, in chunks; None: DEFAULT_PREFILL_TOKENS
    prefix_cache_mb: int = 256  # keys/values of prompt prefixes kept for reuse; 0 disables
    threads: int | None = None  # torch intra-op threads (process-wide); None: torch's default


@dataclass(frozen=True)
class EngineStats:
    running: int  # requests holding a row (prefilling or decoding)
    waiting: int
    adapters: tuple[str, ...]  # resident, least recently used first
    steps: int
    generated_tokens: int
    peak_running: int  # most rows in one forward so far
    kv_cache_bytes: int
    prefix_cache_bytes: int
    prefix_hit_tokens: int  # prompt tokens taken from the prefix cache instead of computed


@dataclass(eq=False)
class _Row:
    request: Request
    prompt_ids: list[int]
    stream: Stream
    assembler: TextAssembler
    max_new: int
    adapter: ServedAdapter | None = None  # read at submit when not resident
    uniforms: Uniforms | None = None
    chain: list[bytes] = field(default_factory=list)  # PrefixCache.chain of the prompt; empty: no prefix caching
    slot: int = 0  # adapter slot (0: the base)
    cache_slot: int = 0  # its row of the KV cache
    computed: int = 0  # prompt tokens whose keys/values are in its cache row
    started: bool = False  # has computed prompt tokens itself (no more prefix-cache lookups)
    stored: int = 0  # prompt blocks offered to the prefix cache
    producer: _Row | None = None  # a row being prefilled whose blocks this one waits for
    wait_until: int = 0  # ... until that row has computed this many prompt tokens
    generated: list[int] = field(default_factory=list)
    counts: torch.Tensor | None = None  # [vocab] generated-token counts, penalized requests only
    queued_at: float = field(default_factory=time.monotonic)
    admitted_step: int = 0  # the engine's step count when it got its row

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.prompt_ids)

    @property
    def pos(self) -> int:
        """Position (and cache column) of the token the next decode step feeds: the last one generated."""
        return len(self.prompt_ids) + len(self.generated) - 1

    @property
    def penalized(self) -> bool:
        return self.request.frequency_penalty != 0 or self.request.presence_penalty != 0


class Engine:
    def __init__(self, weights: Weights, config: EngineConfig = EngineConfig(), *, start: bool = True):
        """Load the base and start the decode thread (`start=False`: no thread; the caller drives
        `step()` itself, which tests use to decide exactly when each request joins).

        The decode thread loads the model itself: torch's CPU kernels run on OpenMP, whose thread pool
        belongs to the thread that opens a parallel region, and a second pool (the loading thread's) makes
        GNU OpenMP's workers sleep between regions instead of spinning once its threads outnumber the cores:
        a decode step here is hundreds of short regions, and waking workers for each cost a third of a
        token's time on 2 cores (measured: 38 against 27 ms a token, bf16, 2 threads)."""
        self.weights, self.config = weights, config
        self.device = pick_device(config.device)
        # Rows by KV-cache slot: the `_decoding` decoding ones first, then the prefilling ones (any order).
        self._rows: list[_Row] = []
        self._decoding = 0
        self._prefilling: list[_Row] = []  # oldest first: the order their chunks are computed in
        self._waiting: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._tokenizer_lock = threading.Lock()
        self._closed: str | None = None  # why submit is refused
        self._steps = self._generated = self._peak_running = self._prefix_hits = 0
        # Admission's estimate (see the module docstring): seconds per step, tokens per finished request
        # (0: none measured yet), and the steps each running row is still expected to take (under _cond).
        self._step_s = 0.0
        self._tokens_per_request = 0.0
        self._running_left: list[int] = []
        self._thread = threading.Thread(target=self._loop, name=f"tuneforge-serving-{weights.description}", daemon=True)
        if not start:
            self._load()
            return
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._thread.start()
        self._loaded.wait()
        if self._load_error is not None:
            raise self._load_error

    def _load(self) -> None:
        config = self.config
        model, tokenizer = load_model_and_tokenizer(self.weights, pick_dtype(config.precision, self.device), self.device)
        model.requires_grad_(False)
        model.eval()
        model.set_attn_implementation(ATTENTION)  # kv_cache.attention: every row's tokens in one flattened forward
        self.model, self.tokenizer = model, tokenizer
        self._rows_ctx, self._layers = adapter_layers.attach(model)
        self._slots = AdapterSlots(self._layers, config.max_adapters)
        self._cache = SlotCache(model.config.num_hidden_layers)
        self._prefixes = PrefixCache(config.prefix_cache_mb * 2**20)
        self.max_context = min(model.config.max_position_embeddings, config.max_context or 1 << 62)
        self.prefill_tokens = config.prefill_tokens or DEFAULT_PREFILL_TOKENS[torch.device(self.device).type]
        self._eos = _eos_ids(model, tokenizer)

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
            row.chain = PrefixCache.chain(request.adapter and request.adapter.id, ids)
        with self._cond:
            if self._closed:
                raise EngineClosed(self._closed)
            wait = self._expected_wait_s()
            bound = self.config.max_wait_s
            if len(self._waiting) >= self.config.max_queue:
                raise QueueFull(len(self._waiting), round(wait - (bound or 0)))
            if bound is not None and wait > bound:
                raise WaitTooLong(len(self._waiting), wait, bound)
            self._waiting.append(row)
            self._cond.notify()
        return stream

    def expected_wait_s(self) -> float:
        """Seconds a request submitted now is expected to wait for a row (0 while one is free)."""
        with self._cond:
            return self._expected_wait_s()

    def _expected_wait_s(self) -> float:
        """(Under _cond.) The rows free up after the steps the running ones have left; each request
        queued ahead takes the first to free up, for the steps it is expected to take; the new one
        gets the next. 0 until a step has been timed."""
        free = self.config.max_batch - len(self._running_left)
        if not self._step_s or free > len(self._waiting):
            return 0.0
        free_at = [0] * max(0, free) + self._running_left
        heapq.heapify(free_at)
        for row in self._waiting:
            heapq.heapreplace(free_at, free_at[0] + self._expected_steps(row))
        return free_at[0] * self._step_s

    def _expected_steps(self, row: _Row) -> int:
        """Steps a request holds its row: its prompt's prefill chunks, then its tokens (at most the
        recent average per finished request, which is usually far below max_tokens)."""
        tokens = row.max_new if not self._tokens_per_request else min(row.max_new, round(self._tokens_per_request) + 1)
        return -(-len(row.prompt_ids) // self.prefill_tokens) + tokens

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
            running=len(self._rows),
            waiting=waiting,
            adapters=adapters,
            steps=self._steps,
            generated_tokens=self._generated,
            peak_running=self._peak_running,
            kv_cache_bytes=self._cache.nbytes(),
            prefix_cache_bytes=self._prefixes.bytes,
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
        try:
            self._load()
        except BaseException as err:  # raised in the thread that created the engine
            self._load_error = err
            return
        finally:
            self._loaded.set()
        with torch.inference_mode():
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or self._waiting or self._rows)
                    if self._closed:
                        break
                try:
                    self.step()
                except Exception:  # a bug or out of memory: fail what was in flight, keep serving the next requests
                    log.exception("serving step failed")
                    self._end_all(fail=ServingError("the model failed while generating; the server log has the details"))
        self._end_all()

    def step(self) -> None:
        """One scheduling step (the decode thread's; public for tests and benchmarks that drive it by hand)."""
        self._drop_cancelled()
        self._admit()
        self._expire_waiting()
        chunks = self._chunks()
        if self._decoding or chunks:
            self._peak_running = max(self._peak_running, self._decoding + len(chunks))
            started = time.perf_counter()
            self._run(chunks)
            took = time.perf_counter() - started
            self._step_s = took if not self._step_s else (1 - _EMA) * self._step_s + _EMA * took
        self._steps += 1
        left = [max(1, self._expected_steps(r) - (self._steps - r.admitted_step)) for r in self._rows]
        with self._cond:
            self._running_left = left

    def _drop_cancelled(self) -> None:
        for row in [r for r in self._rows if r.stream.cancelled]:
            self._finish(row, "cancelled")
        with self._cond:
            cancelled = [r for r in self._waiting if r.stream.cancelled]
            for row in cancelled:
                self._waiting.remove(row)
        for row in cancelled:
            row.stream.finish(self._completion(row, "cancelled"))

    def _expire_waiting(self) -> None:
        """End the requests still without a row START_DEADLINE x max_wait_s after they were queued."""
        if self.config.max_wait_s is None:
            return
        now = time.monotonic()
        deadline = now - START_DEADLINE * self.config.max_wait_s
        with self._cond:
            expired = [r for r in self._waiting if r.queued_at <= deadline]
            for row in expired:
                self._waiting.remove(row)
        for row in expired:
            row.stream.fail(StartTimeout(now - row.queued_at))

    def _admit(self) -> None:
        room = self.config.max_batch - len(self._rows)
        with self._cond:
            candidates = list(self._waiting)
        for row in candidates:
            if room == 0:
                break
            try:
                slot = 0 if row.request.adapter is None else self._slots.acquire(row.request.adapter, row.adapter)
            except ServingError as err:  # the adapter changed on disk or was evicted and is now unreadable
                self._unqueue(row)
                row.stream.fail(err)
                continue
            if slot is None:  # every adapter slot is pinned by running rows: wait for one to free up
                continue
            row.slot, row.adapter, row.admitted_step = slot, None, self._steps
            self._unqueue(row)
            row.cache_slot = len(self._rows)
            self._rows.append(row)
            self._pick_producer(row)
            self._prefilling.append(row)
            room -= 1

    def _unqueue(self, row: _Row) -> None:
        with self._cond:
            self._waiting.remove(row)

    def _pick_producer(self, row: _Row) -> None:
        """The prompt being prefilled that shares the most with this one, if the shared part is at least a
        block: this row takes those keys/values from the prefix cache once that prompt has stored them."""
        if not row.chain:
            return
        limit = len(row.prompt_ids) - 1  # the last prompt token is always computed (its logits)
        for other in self._prefilling:
            storable = BLOCK * (len(other.chain) - 1)  # the blocks `other` will offer the prefix cache
            shared = min(shared_prefix(row.chain, row.prompt_ids, other.chain, other.prompt_ids), storable, limit)
            if shared >= BLOCK and shared > row.wait_until:
                row.producer, row.wait_until = other, min(-(-shared // BLOCK) * BLOCK, storable)

    def _chunks(self) -> list[tuple[_Row, int]]:
        """(row, prompt tokens) computed this step: the prefilling rows, oldest first, within the budget."""
        budget, chunks = self.prefill_tokens, []
        for row in self._prefilling:
            if budget == 0:
                break
            if not row.started:
                if self._waits(row):
                    continue
                self._take_cached_prefix(row)
                row.started = True
            n = min(budget, len(row.prompt_ids) - row.computed)
            chunks.append((row, n))
            budget -= n
        return chunks

    def _waits(self, row: _Row) -> bool:
        p = row.producer
        if p is not None and not p.stream.done and p.computed < row.wait_until:
            return True
        row.producer = None
        return False

    def _take_cached_prefix(self, row: _Row) -> None:
        if not row.chain:
            return
        pieces = self._prefixes.match(row.chain, row.prompt_ids, row.computed, len(row.prompt_ids) - 1)
        if pieces:
            self._cache.write_prefix(row.cache_slot, row.computed, pieces)
            n = sum(p.shape[3] for p in pieces)
            row.computed += n
            row.stored = row.computed // BLOCK
            self._prefix_hits += n

    # -- one forward ---------------------------------------------------------------------------------

    def _run(self, chunks: list[tuple[_Row, int]]) -> None:
        decoding = self._rows[: self._decoding]
        plan, ids, positions, slots, keep = self._plan(decoding, chunks)
        logits = self._forward(plan, ids, positions, slots, keep)
        completed = []
        for row, n in chunks:
            row.computed += n
            self._remember_prefixes(row)
            if not row.prefilling:
                completed.append(row)
        for row in completed:
            self._promote(row)
        self._advance([*decoding, *completed], logits)

    def _plan(self, decoding: list[_Row], chunks: list[tuple[_Row, int]]):
        """The flattened step: decode tokens first (row i at cache slot i), then the chunks."""
        dev = self.device
        ids, positions, cache_slots, slots = [], [], [], []
        for i, row in enumerate(decoding):
            ids.append(row.generated[-1])
            positions.append(row.pos)
            cache_slots.append(i)
            slots.append(row.slot)
        planned, keep = [], list(range(len(decoding)))
        for row, n in chunks:
            start, offset = row.computed, len(ids)
            ids += row.prompt_ids[start : start + n]
            positions += range(start, start + n)
            cache_slots += [row.cache_slot] * n
            slots += [row.slot] * n
            cols = torch.arange(start + n, device=dev)
            mask = cols[None, :] <= torch.arange(start, start + n, device=dev)[:, None]
            planned.append(Chunk(row.cache_slot, start, n, offset, mask))
            if start + n == len(row.prompt_ids):
                keep.append(len(ids) - 1)  # the prompt's last token: its logits give the first generated token
        positions_t = torch.tensor(positions, device=dev)
        plan = StepPlan(torch.tensor(cache_slots, device=dev), positions_t, chunks=planned)
        if decoding:
            plan.decode = len(decoding)
            plan.decode_cols = max(r.pos for r in decoding) + 1
            cols = torch.arange(plan.decode_cols, device=dev)
            plan.decode_mask = (cols[None, :] <= positions_t[: plan.decode, None])[:, None, None]
        ids_t = torch.tensor([ids], device=dev)
        return plan, ids_t, positions_t[None], torch.tensor(slots, device=dev), torch.tensor(keep, dtype=torch.long, device=dev)

    def _forward(self, plan: StepPlan, ids, positions, slots, keep) -> torch.Tensor:
        present = set(slots.tolist())
        lora = {s for s in present if self._slots.method_of(s) == "LORA"}
        has_ia3 = any(self._slots.method_of(s) == "IA3" for s in present)
        self._cache.plan = plan
        self._rows_ctx.set(slots, self._slots.slots, lora, has_ia3)
        try:
            out = self.model(input_ids=ids, position_ids=positions, cache=self._cache, logits_to_keep=keep, serving_plan=plan)
        finally:
            self._rows_ctx.clear()
        return out.logits[0]

    def _remember_prefixes(self, row: _Row) -> None:
        """Offer the prefix cache the prompt's blocks computed so far (a row waiting for them may take them next step)."""
        whole = min(row.computed // BLOCK, len(row.chain) - 1)
        for j in range(row.stored, whole):
            key = row.chain[j + 1]
            if self._prefixes.wants(key):
                tokens = row.prompt_ids[j * BLOCK : (j + 1) * BLOCK]
                self._prefixes.add(key, row.chain[j], tokens, self._cache.read_block(row.cache_slot, j * BLOCK))
        row.stored = max(row.stored, whole)

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample each row's next token from its logits, stream the text, retire finished rows."""
        if not rows:
            return
        masked = [i for i, r in enumerate(rows) if r.request.ignore_eos]
        if masked and self._eos:  # the end-of-turn tokens can never be picked (llama.cpp's ignore_eos)
            eos = torch.tensor(sorted(self._eos), device=logits.device)
            rows_at = torch.tensor(masked, device=logits.device)
            logits[rows_at[:, None], eos[None, :]] = float("-inf")
        tokens = next_tokens(logits, self._row_params(rows), self._penalty_counts(rows, logits.shape[-1]))
        finished: list[tuple[_Row, FinishReason]] = []
        for row, token in zip(rows, tokens.tolist()):
            row.generated.append(token)
            if row.counts is not None:
                row.counts[token] += 1
            row.stream.completion_tokens = len(row.generated)
            reason = self._consume(row, token)
            if reason is not None:
                finished.append((row, reason))
        self._generated += len(rows)
        for row, reason in finished:
            self._finish(row, reason)

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

    def _penalty_counts(self, rows: list[_Row], vocab: int) -> torch.Tensor | None:
        """[rows, vocab] counts of the tokens each row generated so far; None when no row is penalized."""
        if not any(r.penalized for r in rows):
            return None
        for row in rows:
            if row.penalized and row.counts is None:
                row.counts = torch.zeros(vocab, device=self.device)
        zeros = torch.zeros(vocab, device=self.device)
        return torch.stack([zeros if r.counts is None else r.counts for r in rows])

    # -- rows and their cache slots --------------------------------------------------------------------

    def _move(self, row: _Row, slot: int) -> None:
        self._cache.move(row.cache_slot, slot)
        self._rows[slot], row.cache_slot = row, slot

    def _promote(self, row: _Row) -> None:
        """A prompt is prefilled: its row joins the decoding ones (slots 0..decoding-1)."""
        first = self._decoding  # the first prefilling slot
        if row.cache_slot != first:
            other = self._rows[first]
            self._cache.swap(row.cache_slot, first)
            self._rows[row.cache_slot], other.cache_slot = other, row.cache_slot
            self._rows[first], row.cache_slot = row, first
        self._decoding += 1
        self._prefilling.remove(row)

    def _remove(self, row: _Row) -> None:
        """Free the row's cache slot and keep the slots packed: decoding rows first, then prefilling ones."""
        hole = row.cache_slot
        if hole < self._decoding:
            last_decoding = self._rows[self._decoding - 1]
            if last_decoding is not row:
                self._move(last_decoding, hole)
            self._decoding -= 1
            hole = self._decoding
        else:
            self._prefilling.remove(row)
        last = self._rows[-1]
        if last is not row and hole != len(self._rows) - 1:
            self._move(last, hole)
        self._rows.pop()
        if not self._rows:
            self._cache.release()

    def _finish(self, row: _Row, reason: FinishReason) -> None:
        if reason != "cancelled":
            n = len(row.generated)
            self._tokens_per_request = n if not self._tokens_per_request else (1 - _EMA) * self._tokens_per_request + _EMA * n
        tail = row.assembler.flush()  # text held back as a possible stop sequence: it cannot become one now
        if tail:
            row.stream.put(tail)
        self._remove(row)
        if row.request.adapter is not None:
            self._slots.release(row.request.adapter.id)
        row.stream.finish(self._completion(row, reason))

    def _completion(self, row: _Row, reason: FinishReason) -> Completion:
        return Completion(row.assembler.text, reason, len(row.prompt_ids), len(row.generated), tuple(row.generated))

    def _end_all(self, fail: ServingError | None = None) -> None:
        """End every request in flight: cancelled at shutdown, or failed after an error."""
        for row in list(self._rows):
            if fail is None:
                self._finish(row, "cancelled")
                continue
            row.stream.fail(fail)
            if row.request.adapter is not None:
                self._slots.release(row.request.adapter.id)
        if fail is not None:
            self._rows.clear()
            self._prefilling.clear()
            self._decoding = 0
            self._cache.release()
            with self._cond:
                self._running_left = []
            return
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for row in waiting:
            row.stream.finish(self._completion(row, "cancelled"))


def _eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a turn: the generation config's (Llama 3 lists several) and the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
