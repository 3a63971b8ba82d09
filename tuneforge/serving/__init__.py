"""Serving fine-tuned models: one base model loaded once per process, many LoRA and (IA)^3
adapters decoded together, continuous batching, streaming; and export (PEFT, merged, GGUF).

The interface the HTTP layer (OCI /actions/chat and /actions/generateText, OpenAI /openai/v1),
`tuneforge chat` and the console build on. It is a contract: keep it stable.

    from tuneforge.serving import AdapterRef, EngineConfig, Request, default_pool

    pool = default_pool(EngineConfig(max_batch=64, max_queue=256, max_adapters=8))
    engine, adapter = pool.for_run("runs/a", adapter_id="ocid1.generativeaimodel...")  # or pool.get(weights_path)
    stream = engine.submit(Request(messages=[{"role": "user", "content": "Hi"}], adapter=adapter,
                                   max_tokens=100, temperature=0.3, stop=["\\n\\n"], seed=7))
    for delta in stream: ...            # text deltas, blocking; `async for delta in stream:` in asyncio
    completion = stream.result()        # or `await stream.aresult()`
    completion.text, completion.finish_reason, completion.prompt_tokens, completion.completion_tokens
    stream.cancel()                     # the client went away (leaving a `for`/`async for` early does it too)
    pool.shutdown()                     # at server exit: running requests end "cancelled"

Types (tuneforge.serving.requests, stdlib only: importing them does not import torch):
  Request(messages | prompt, adapter=None, max_tokens=None, temperature=0.0, top_p=1.0, top_k=0,
          frequency_penalty=0.0, presence_penalty=0.0, stop=(), seed=None)
      messages: [{"role": "system"|"user"|"assistant", "content": str}], rendered with the base
      model's chat template plus the assistant's generation prompt; prompt: raw text, tokenized as
      is (the tokenizer's BOS added). temperature 0 = greedy; top_k 0 / top_p 1 = off; penalties
      count generated tokens (OpenAI's formula), range [-2, 2]; max_tokens None = until the context
      is full; a prompt + max_tokens past the context ends "length" at the context's end.
  AdapterRef(id, path): path = a PEFT adapter folder or a run folder (its adapter/). The id keys
      the LRU: one id, one adapter. None = the plain base model.
  Completion(text, finish_reason, prompt_tokens, completion_tokens, token_ids), total_tokens.
      finish_reason: "stop" (end-of-turn token or a stop sequence; the stop text is not included),
      "length" (max_tokens or the context), "cancelled" (cancel() or shutdown).
  Stream: id, created, prompt_tokens, completion_tokens (so far), done, cancelled; iteration (sync
      and async) yields str deltas whose concatenation is exactly completion.text; result(timeout=None),
      aresult(), cancel(). If the engine fails mid-request, iteration/result raise ServingError.

Errors (all TuneForgeError: str(err) is a sentence for the user, without paths or tracebacks):
  InvalidParameter (tuneforge.errors)  a request field; .field is the API's camelCase name  -> 400
  PromptTooLong(prompt_tokens, context_tokens)                                             -> 400
  AdapterUnavailable  folder missing, no adapter files, or its training not finished       -> 404
  AdapterInvalid      not servable on this base (type, shapes, DoRA, ...)                  -> 400
  QueueFull(waiting, retry_after_s)  max_queue requests already wait for a row             -> 429
    WaitTooLong(QueueFull)  the expected wait for a row exceeds max_wait_s                 -> 429
    StartTimeout(QueueFull) still no row at START_DEADLINE x max_wait_s (from the stream)  -> 429
  EngineClosed        the engine or pool was shut down                                     -> 503
  Interrupted         a hosting replica stopped mid-answer (from the stream)               -> 503
  ServingError        base class; also raised from a stream whose step failed              -> 500
  All but the last and StartTimeout come from submit(), before anything is queued.

Engine (tuneforge.serving.engine): Engine(weights: Weights, config=EngineConfig()) loads the base
  and starts its decode thread. submit(request) -> Stream; generate(request) -> Completion;
  count_tokens(request) -> int; expected_wait_s() -> float (for a request submitted now); stats() -> EngineStats(running, waiting, adapters, steps,
  generated_tokens, peak_running, kv_cache_bytes, prefix_cache_bytes, prefix_hit_tokens);
  shutdown(timeout=30); attributes tokenizer, max_context, weights (weights.stand_in: the answers
  come from the bundled stand-in), device.
EngineConfig(device="auto", precision="auto", max_batch=64, max_queue=256, max_wait_s=30.0, max_adapters=8,
  max_context=None, prefill_tokens=1024, prefix_cache_mb=256, threads=None): threads sets torch's
  intra-op threads, which is process-wide.
EnginePool(config): get(weights | path) -> Engine (loaded once per base folder, shared);
  for_run(run_dir, adapter_id=None) -> (Engine, AdapterRef); engines(); shutdown().
  default_pool(config=None) is the process-wide one.

Export (tuneforge.serving.export): export_peft(run_dir, target_dir), export_merged(run_dir,
  target_dir), export_gguf(run_dir, target_file, gguf_type="f16"|"q8_0"), each returning the path
  written and raising ExportError (a TuneForgeError) for an unfinished run, missing base weights or an
  existing target. How it all works and how it was checked: docs/serving.md.
"""

from tuneforge.errors import InvalidParameter
from tuneforge.serving.requests import (
    AdapterInvalid,
    AdapterRef,
    AdapterUnavailable,
    Completion,
    EngineClosed,
    FinishReason,
    Interrupted,
    PromptTooLong,
    QueueFull,
    Request,
    ServingError,
    StartTimeout,
    WaitTooLong,
)

_LAZY = {  # these import torch: loaded on first use
    "Engine": "tuneforge.serving.engine",
    "EngineConfig": "tuneforge.serving.engine",
    "EngineStats": "tuneforge.serving.engine",
    "EnginePool": "tuneforge.serving.pool",
    "default_pool": "tuneforge.serving.pool",
    "Stream": "tuneforge.serving.stream",
}

__all__ = [
    "AdapterInvalid",
    "AdapterRef",
    "AdapterUnavailable",
    "Completion",
    "EngineClosed",
    "FinishReason",
    "Interrupted",
    "InvalidParameter",
    "PromptTooLong",
    "QueueFull",
    "Request",
    "ServingError",
    "StartTimeout",
    "WaitTooLong",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuneforge.serving' has no attribute {name!r}")
