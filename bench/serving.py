"""Serving side by side: TuneForge's engine vs what a user would run today with PEFT, and vs llama.cpp's
server, same machine, same stand-in model, same 4 LoRA adapters, same requests, two workloads.

    .venv/bin/python bench/serving.py                      # both workloads, 1, 4, 16, 64 streams (see bench/README.md)
    .venv/bin/python bench/serving.py --concurrency 1,16 --workload decode-heavy
    .venv/bin/python bench/serving.py --no-write           # print only; default rewrites bench/RESULTS.md's serving section

Adapters: 4 LoRA adapters trained on the stand-in with `tuneforge train` on the first 64 lines of
tuneforge/examples/dates.jsonl (1 epoch each, different seeds and learning rates), cached in the work folder
(--work) so reruns skip training. For llama.cpp they are converted to GGUF LoRA adapters by llama.cpp's own
convert_lora_to_gguf.py, and the base is written as GGUF by TuneForge's GGUF writer (tuneforge/serving/gguf_writer.py).

Workloads (--workload, default both): each a list of requests per concurrency level, identical for every system;
adapter i % 4; greedy; the prompt is the chat template of one user message, tokenized once (the same token ids
for every system).
  prompt-heavy  the dataset's prompts (~65 prompt tokens), at most --max-tokens new tokens, ending at the
                end-of-turn token otherwise (so ~11 tokens each): prefill dominates.
  decode-heavy  the dataset's prompts with a request for a long explanation, and a max_tokens drawn per request
                (seeded) from --decode-tokens (64..256): the end-of-turn token is ignored by every system, so each
                request generates exactly its max_tokens and streams end at different times.

At each concurrency C, C closed-loop clients: each sends the next request of the list as soon as its previous one
is answered (the level's list: max(2 C, 16) requests). The systems, each in its own process (its peak RSS is its
own), one after the other:

  tuneforge      Engine.submit from the C client threads; continuous batching of mixed adapters (--tuneforge-precision).
  peft-mixed     a PeftModel with the 4 adapters loaded (--peft-precision); a server loop takes every request waiting (up
                 to C), left-pads them and runs one `generate(..., adapter_names=[...])`: PEFT's
                 mixed-adapter batch. Requests arriving meanwhile wait for the next batch. Its loading and
                 every generate run in one thread, as the engine's do (TorchThread says why).
  peft-switch    the same PeftModel, one request at a time in arrival order, `set_adapter` when the
                 adapter changes: what a user without batching support does.
  tuneforge-replicas  (only when named) the same engine as a 2-unit hosting cluster runs it: --replicas replica
                 processes (tuneforge/hosting, threads divided among them) behind the API server's router, which
                 places each request on the least loaded one and relays its text across the process boundary.
  llama-cpp      llama.cpp's `llama-server` (built by bench/build_llama_server.sh) with the base GGUF and the 4
                 GGUF adapters (--lora ... --lora-init-without-apply), --parallel C slots (continuous batching),
                 --threads; each request POSTs the token ids to /completion with "lora": [{"id": i, "scale": 1}],
                 streamed (--llama-precision: f32, f16 or q8_0 weights).

Figures per system, workload and C: output tokens/s (all tokens generated, the end-of-turn token included, over
the level's wall time), time to first token p50/p99 (submit -> first token at the client), inter-token
latency p50/p99 (gaps between a request's successive tokens), and the process's peak RSS (llama-cpp: the server
process's VmHWM). The memory rows compare each RSS with a process that loaded only the base model with
transformers. /proc/loadavg is printed before and after each system; RESULTS.md is not rewritten when the 1-minute
load before any system was above 1.5 (--allow-load overrides); before each system the bench waits up to 240 s for
the previous one's load to leave the average.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "tuneforge" / "examples" / "dates.jsonl"
RESULTS = ROOT / "bench" / "RESULTS.md"
BUILD_LLAMA = ROOT / "bench" / "build_llama_server.sh"
BASE_MODEL = "meta.llama-3.3-70b-instruct"
# (seed, learning rate): four different adapters of the same task, each one epoch on the first TRAIN_EXAMPLES
# lines (7 optimizer steps: a few minutes each on 2 cores; what they answer matters less than that they are real)
ADAPTERS = {"dates-a": (1, "0.001"), "dates-b": (2, "0.0015"), "dates-c": (3, "0.002"), "dates-d": (4, "0.003")}
TRAIN_EXAMPLES = 64
SYSTEMS = ("tuneforge", "peft-mixed", "peft-switch", "llama-cpp", "tuneforge-replicas")
DEFAULT_SYSTEMS = SYSTEMS[:4]  # tuneforge-replicas: the hosting layout, asked for by name
WORKLOADS = ("prompt-heavy", "decode-heavy")
DECODE_PROMPT = "{}\nGive the ISO 8601 date, then explain at length, step by step, how you read each part of it."
LLAMA_PRECISIONS = ("f32", "f16", "q8_0")
# what a TuneForge precision is compared with: the same class of number format
PRECISION_CLASS = {"fp32": "32-bit float", "f32": "32-bit float", "bf16": "16-bit float", "f16": "16-bit float", "q8_0": "8-bit"}
LLAMA_FOR = {"fp32": "f32", "bf16": "f16"}  # --llama-precision's default, from TuneForge's
LOAD_LIMIT = 1.5  # 1-minute load average above which figures are not written (2 cores: others would be timed too)
COOL_DOWN_S = 240  # before each system, wait up to this long for the previous one's load to leave the average
BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"


# --- the adapters ------------------------------------------------------------------------------------


def train_adapters(work: Path, threads: int) -> dict[str, Path]:
    dataset = work / f"dates-{TRAIN_EXAMPLES}.jsonl"
    dataset.write_text("".join(DATASET.read_text().splitlines(keepends=True)[:TRAIN_EXAMPLES]))
    runs = {}
    for name, (seed, lr) in ADAPTERS.items():
        out = work / "adapters" / name
        if not (out / "model.json").is_file():
            print(f"training adapter {name} (seed {seed}, learning rate {lr}, 1 epoch) ...", flush=True)
            cmd = [sys.executable, "-m", "tuneforge", "train", "--base-model", BASE_MODEL, "--dataset", str(dataset)]
            cmd += ["--weights", "stand-in", "--output", str(out), "--seed", str(seed), "--learning-rate", lr]
            cmd += ["--total-training-epochs", "1", "--precision", "fp32", "--threads", str(threads)]
            if out.exists():
                cmd.append("--resume")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs[name] = out
    return runs


def requests(workload: str, n: int, max_tokens: int, decode_tokens: tuple[int, int], seed: int) -> list[dict]:
    prompts = [json.loads(line)["prompt"] for line in DATASET.read_text().splitlines() if line.strip()]
    names = list(ADAPTERS)
    reqs = []
    rng = random.Random(seed)  # decode-heavy lengths: the same list on every run with the same seed
    for i in range(n):
        r = {"prompt": prompts[i % len(prompts)], "adapter": names[i % len(names)], "max_tokens": max_tokens}
        if workload == "decode-heavy":
            r.update(prompt=DECODE_PROMPT.format(r["prompt"]), max_tokens=rng.randint(*decode_tokens), ignore_eos=True)
        reqs.append(r)
    return reqs


# --- llama.cpp: the binary, the GGUF files ------------------------------------------------------------


def build_llama_server() -> Path:
    """bench/build_llama_server.sh (skips the build when its binary exists); its last line is the binary."""
    print("llama-server: bench/build_llama_server.sh (a first build takes 10-30 min on 2 cores) ...", flush=True)
    proc = subprocess.run(["bash", str(BUILD_LLAMA)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(proc.stdout.strip().splitlines()[-1])


def llama_files(work: Path, runs: dict[str, Path], binary: Path, precision: str) -> dict:
    """The base GGUF and the 4 GGUF LoRA adapters for one llama.cpp precision, written once into the work folder.
    Adapters: f32 beside an f32 base, else f16 (a q8_0 base keeps f16 adapters, as llama.cpp's docs do)."""
    folder = work / "llama" / precision
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "base.gguf"
    if not model.is_file():
        print(f"llama.cpp: writing the stand-in as {precision} GGUF (TuneForge's GGUF writer) ...", flush=True)
        tmp = folder / "base.gguf.tmp"
        subprocess.run([sys.executable, __file__, "--child", "gguf-base", json.dumps([str(tmp), precision])], check=True)
        tmp.rename(model)
    source = binary.parent.parent / "src" / "vendor" / "llama.cpp"  # the tree bench/build_llama_server.sh built
    adapter_type = "f32" if precision == "f32" else "f16"
    adapters = []
    for name, run in runs.items():
        path = folder / f"{name}-{adapter_type}.gguf"
        trained = run / "adapter" / "adapter_model.safetensors"
        if not path.is_file() or path.stat().st_mtime < trained.stat().st_mtime:  # none yet, or the adapter was retrained
            print(f"llama.cpp: converting adapter {name} to a GGUF LoRA adapter ({adapter_type}) ...", flush=True)
            tmp = path.with_suffix(".tmp")
            cmd = [sys.executable, str(source / "convert_lora_to_gguf.py"), str(run / "adapter"), "--outtype", adapter_type]
            cmd += ["--outfile", str(tmp), "--base", str(stand_in_folder())]
            subprocess.run(cmd, check=True, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tmp.rename(path)
        adapters.append(str(path))
    return {"binary": str(binary), "model": str(model), "adapters": adapters, "precision": precision}


def stand_in_folder() -> Path:
    from tuneforge.engine.weights import resolve_weights

    return Path(resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="").path)


def child_gguf_base(target: str, precision: str) -> None:
    """The stand-in (no adapter) as one GGUF file, written by TuneForge's export writer. It writes f16 and
    q8_0 (`tuneforge export --gguf-type`); for f32 the bench keeps every tensor in f32 through the same writer."""
    from unittest import mock

    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.serving import gguf_writer

    folder = stand_in_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if precision != "f32":
        gguf_writer.write_gguf(model, tokenizer, folder, Path(target), precision, name="stand-in")
        return

    def add_f32(writer, name, data, gguf_type):
        writer.add_tensor(name, data.astype(np.float32))

    with mock.patch.object(gguf_writer, "_add", add_f32), mock.patch.dict(gguf_writer.FILE_TYPES, f32=gguf.LlamaFileType.ALL_F32):
        gguf_writer.write_gguf(model, tokenizer, folder, Path(target), "f32", name="stand-in")


# --- measuring -----------------------------------------------------------------------------------------


class Timeline:
    """Per request: submit time and the time each token arrived."""

    def __init__(self, n: int):
        self.submitted = [0.0] * n
        self.tokens: list[list[float]] = [[] for _ in range(n)]


def summary(timeline: Timeline, wall: float) -> dict:
    ttft = [t[0] - s for s, t in zip(timeline.submitted, timeline.tokens) if t]
    itl = [b - a for t in timeline.tokens for a, b in itertools.pairwise(t)]
    total = sum(len(t) for t in timeline.tokens)
    return {
        "tokens": total,
        "seconds": wall,
        "tokensPerSecond": total / wall,
        "ttftP50": pct(ttft, 50),
        "ttftP99": pct(ttft, 99),
        "itlP50": pct(itl, 50),
        "itlP99": pct(itl, 99),
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def closed_loop(reqs: list[dict], concurrency: int, serve_one) -> dict:
    """`concurrency` client threads; each calls serve_one(index, timeline) for the next request."""
    timeline, lock, next_index = Timeline(len(reqs)), threading.Lock(), iter(range(len(reqs)))

    def client():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            timeline.submitted[i] = time.perf_counter()
            serve_one(i, timeline)

    clients = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    return summary(timeline, time.perf_counter() - start)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def report(system: str, workload: str, c: int, level: dict) -> None:
    line = f"  {system:<16} {workload:<12} C={c:<3} {level['tokensPerSecond']:7.1f} tok/s  TTFT p99 {level['ttftP99']:.2f} s"
    print(line, file=sys.stderr, flush=True)


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids every system decodes from: the chat template of one user message, tokenized as
    TuneForge's engine and the PEFT server do (no special tokens added: the template writes them)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


# --- the systems (each runs in a child process) -------------------------------------------------------


def child_tuneforge(spec: dict) -> dict:
    from tuneforge.engine.precision import pick_dtype
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.serving import AdapterRef, Request
    from tuneforge.serving.engine import Engine, EngineConfig

    weights = resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="")
    precision = spec["precision"]
    refs = {name: AdapterRef(name, Path(path)) for name, path in spec["adapters"].items()}
    if spec.get("replicas"):  # a hosting cluster's layout: N replica processes behind the API server's router
        config = dict(device="cpu", precision=precision, max_batch=64, max_queue=1024, max_adapters=8)
        engine = Replicas(weights, spec["replicas"], config, spec)
        for ref in refs.values():
            engine.replicas.warm(weights, ref)
    else:
        engine = Engine(weights, EngineConfig(device="cpu", precision=precision, max_batch=64, max_queue=1024))
    probe = [{"role": "user", "content": spec["probe"]}]
    answers = {"base": engine.generate(Request(messages=probe, max_tokens=12)).text}
    for name, ref in refs.items():  # attach the adapters before measuring (an LRU miss reads them from disk)
        answers[name] = engine.generate(Request(messages=probe, adapter=ref, max_tokens=12)).text
    out = {"rssAfterLoadMiB": rss_mib() + (engine.rss_mib() if spec.get("replicas") else 0), "answers": answers}
    out["precision"] = {"float32": "fp32", "bfloat16": "bf16"}[str(pick_dtype(precision, "cpu")).removeprefix("torch.")]
    for workload, levels in spec["workloads"].items():
        out[workload] = {}
        for c, reqs in levels:

            def serve_one(i, timeline, reqs=reqs):
                r = reqs[i]
                messages = [{"role": "user", "content": r["prompt"]}]
                request = Request(
                    messages=messages,
                    adapter=refs[r["adapter"]],
                    max_tokens=r["max_tokens"],
                    ignore_eos=bool(r.get("ignore_eos")),
                )
                stream = engine.submit(request)
                for _ in stream:  # a token that shows no text yet reaches the client with the next delta
                    timeline.tokens[i] += [time.perf_counter()] * (stream.completion_tokens - len(timeline.tokens[i]))
                timeline.tokens[i] += [time.perf_counter()] * (stream.result().completion_tokens - len(timeline.tokens[i]))

            out[workload][str(c)] = closed_loop(reqs, c, serve_one)
            report(f"tuneforge {out['precision']}", workload, c, out[workload][str(c)])
    out["peakRssMiB"] = peak_rss_mib() + (engine.peak_rss_mib() if spec.get("replicas") else 0)
    engine.shutdown()
    return out


class Replicas:
    """tuneforge/hosting's ReplicaSet of `units` local replica processes (each `threads / units` torch
    threads) with the Engine calls child_tuneforge makes; their memory counts with this process's."""

    def __init__(self, weights, units: int, config: dict, spec: dict):
        from tuneforge.hosting.launchers import ProcessLauncher
        from tuneforge.hosting.router import ReplicaSet

        self.weights = weights
        config = {**config, "threads": max(1, spec["threads"] // units)}
        self.replicas = ReplicaSet("bench", units, ProcessLauncher(), config)

    def submit(self, request):
        return self.replicas.submit(self.weights, request)

    def generate(self, request):
        return self.replicas.generate(self.weights, request)

    def peak_rss_mib(self) -> float:
        pids = [r["pid"] for r in self.replicas.describe()]
        return sum(_status_kib(pid, "VmHWM") for pid in pids) / 1024

    def rss_mib(self) -> float:
        return sum(_status_kib(r["pid"], "VmRSS") for r in self.replicas.describe()) / 1024

    def shutdown(self) -> None:
        self.replicas.shutdown()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def load_peft(spec: dict):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.weights import resolve_weights

    weights = resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["peftPrecision"]]
    base = AutoModelForCausalLM.from_pretrained(weights.path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(weights.path)
    tokenizer.padding_side = "left"
    first, *others = spec["adapters"].items()
    model = PeftModel.from_pretrained(base, str(Path(first[1]) / "adapter"), adapter_name=first[0])
    for name, path in others:
        model.load_adapter(str(Path(path) / "adapter"), adapter_name=name)
    return model.eval(), tokenizer


class StepClock:
    """A `generate` streamer: when each decoding step produced its tokens (its first call is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value):
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self):
        pass


class TorchThread:
    """One thread for all of a system's torch work, its model's loading included, as TuneForge's engine
    does (tuneforge/serving/engine.py): OpenMP's pool belongs to the thread that opens a parallel region,
    and a second one (the loading thread's) makes GNU OpenMP's workers sleep between regions instead of
    spinning, which costs a generate() in another thread than the loader's about a third of its speed."""

    def __init__(self, threads: int):
        import queue

        self.tasks: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=(threads,), daemon=True).start()

    def _run(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        while True:
            fn, done, out = self.tasks.get()
            out.append(fn())
            done.set()

    def start_task(self, fn) -> threading.Event:
        done = threading.Event()
        self.tasks.put((fn, done, []))
        return done

    def call(self, fn):
        out: list = []
        done = threading.Event()
        self.tasks.put((fn, done, out))
        done.wait()
        return out[0]


class PeftServer:
    """A server thread in front of one PeftModel. mixed: each `generate` takes every request waiting
    (up to `batch`), with `adapter_names`; otherwise one request per `generate`, after `set_adapter`."""

    def __init__(self, model, tokenizer, reqs: list[dict], batch: int, mixed: bool, worker: TorchThread):
        import queue

        self.model, self.tokenizer, self.reqs, self.batch, self.mixed = model, tokenizer, reqs, batch, mixed
        ids = model.generation_config.eos_token_id
        self.eos = {tokenizer.eos_token_id, *(ids if isinstance(ids, list) else [ids])} - {None}
        self.pending = queue.Queue()
        worker.start_task(self._serve)

    def serve_one(self, i: int, timeline: Timeline) -> None:
        done = threading.Event()
        self.pending.put((i, timeline, done))
        done.wait()

    def _serve(self) -> None:
        import queue

        import torch

        served = 0
        while served < len(self.reqs):
            batch = [self.pending.get()]
            while len(batch) < self.batch:
                try:
                    batch.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            with torch.inference_mode():
                self._generate(batch)
            for _, _, done in batch:
                done.set()
            served += len(batch)

    def _generate(self, batch) -> None:
        import torch

        reqs = [self.reqs[i] for i, _, _ in batch]
        ids = [chat_ids(self.tokenizer, r["prompt"]) for r in reqs]
        width, pad = max(map(len, ids)), self.tokenizer.pad_token_id
        enc = {
            "input_ids": torch.tensor([[pad] * (width - len(x)) + x for x in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids]),
        }
        if self.mixed:
            extra = {"adapter_names": [r["adapter"] for r in reqs]}
        else:
            self.model.set_adapter(reqs[0]["adapter"])
            extra = {}
        clock = StepClock()
        longest = max(r["max_tokens"] for r in reqs)
        ignore_eos = any(r.get("ignore_eos") for r in reqs)
        if ignore_eos:  # generate's own control: the end-of-turn token is masked until min_new_tokens
            extra["min_new_tokens"] = longest
        out = self.model.generate(**enc, max_new_tokens=longest, do_sample=False, streamer=clock, pad_token_id=pad, **extra)
        for (i, timeline, _), r, row in zip(batch, reqs, out[:, width:].tolist()):
            # a batch decodes until its longest row is done; each row's answer is its own max_tokens, or up to
            # its end-of-turn token (rows that ended early are padded)
            n = r["max_tokens"] if r.get("ignore_eos") else next((k + 1 for k, t in enumerate(row) if t in self.eos), len(row))
            timeline.tokens[i] = clock.times[: min(n, r["max_tokens"])]


def child_peft(spec: dict, mixed: bool) -> dict:
    worker = TorchThread(spec["threads"])
    model, tokenizer = worker.call(lambda: load_peft(spec))
    out = {"rssAfterLoadMiB": rss_mib(), "precision": spec["peftPrecision"]}
    name = "peft-mixed" if mixed else "peft-switch"
    for workload, levels in spec["workloads"].items():
        out[workload] = {}
        for c, reqs in levels:
            server = PeftServer(model, tokenizer, reqs, c if mixed else 1, mixed, worker)
            out[workload][str(c)] = closed_loop(reqs, c, server.serve_one)
            report(f"{name} {spec['peftPrecision']}", workload, c, out[workload][str(c)])
    out["peakRssMiB"] = peak_rss_mib()
    return out


class LlamaServer:
    """llama.cpp's llama-server as a subprocess on a free loopback port: the base GGUF, every adapter loaded
    at scale 0 (--lora-init-without-apply) and chosen per request, `parallel` slots of `slot_tokens` each."""

    def __init__(self, llama: dict, parallel: int, slot_tokens: int, threads: int, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        kv = "f32" if llama["precision"] == "f32" else "f16"  # the cache in the weights' class (f16: llama.cpp's default)
        cmd = [llama["binary"], "-m", llama["model"], "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--parallel", str(parallel), "--ctx-size", str(parallel * slot_tokens), "--no-kv-unified"]
        cmd += ["--threads", str(threads), "--threads-batch", str(threads), "-ctk", kv, "-ctv", kv]
        # its host-memory prompt cache bounded as TuneForge's prefix cache is (prefix_cache_mb 256)
        cmd += ["--cache-ram", "256", "--lora-init-without-apply"]
        for path in llama["adapters"]:
            cmd += ["--lora", path]
        self.adapters = len(llama["adapters"])
        self.log = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {self.proc.returncode}; its log: {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"llama-server did not answer /health within 300 s; its log: {log}")
            time.sleep(0.2)

    def complete(self, ids: list[int], adapter: int | None, max_tokens: int, ignore_eos: bool, on_tokens=None) -> dict:
        """POST /completion with the prompt as token ids (nothing added: no BOS, no template); greedy. Streamed
        when on_tokens is given: on_tokens(n) as each event with n generated tokens arrives. Returns the last event."""
        body = {"prompt": ids, "n_predict": max_tokens, "temperature": 0, "top_k": 1, "ignore_eos": ignore_eos}
        body |= {"cache_prompt": True, "stream": on_tokens is not None, "return_tokens": True}
        # an adapter left out of the list gets scale 0; an empty list would mean every adapter at scale 1
        body["lora"] = [{"id": k, "scale": float(k == adapter)} for k in range(self.adapters)]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        try:
            conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"llama-server answered {resp.status}: {resp.read()[:500]!r}")
            if on_tokens is None:
                return json.loads(resp.read())
            event = {}
            for line in resp:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event.get("tokens"):
                    on_tokens(len(event["tokens"]))
                if event.get("stop"):
                    break
            return event
        finally:
            conn.close()

    def status_mib(self, key: str) -> float:
        """VmRSS or VmHWM (peak) of the server process, from /proc/PID/status."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def child_llama(spec: dict) -> dict:
    from transformers import AutoTokenizer

    llama, names = spec["llama"], list(spec["adapters"])
    tokenizer = AutoTokenizer.from_pretrained(stand_in_folder())
    log = Path(spec["result"]).with_suffix(".server.log")
    log.unlink(missing_ok=True)
    out = {"precision": llama["precision"], "peakRssMiB": 0.0}
    for workload, levels in spec["workloads"].items():
        out[workload] = {}
        for c, reqs in levels:
            ids = [chat_ids(tokenizer, r["prompt"]) for r in reqs]
            longest = max(len(x) + r["max_tokens"] for x, r in zip(ids, reqs))
            server = LlamaServer(llama, c, -(-(longest + 16) // 256) * 256, spec["threads"], log)
            try:
                if "answers" not in out:  # greedy answers to one prompt: each adapter must change them
                    probe = chat_ids(tokenizer, spec["probe"])
                    out["answers"] = {"base": server.complete(probe, None, 12, False)["content"]}
                    for k, name in enumerate(names):
                        out["answers"][name] = server.complete(probe, k, 12, False)["content"]
                    out["rssAfterLoadMiB"] = server.status_mib("VmRSS")
                for k in range(len(names)):  # warm up every adapter on this server (one token each)
                    server.complete(ids[0], k, 1, False)

                def serve_one(i, timeline, reqs=reqs, ids=ids, server=server):
                    r = reqs[i]
                    arrived = timeline.tokens[i]
                    last = server.complete(
                        ids[i], names.index(r["adapter"]), r["max_tokens"], bool(r.get("ignore_eos")),
                        on_tokens=lambda n: arrived.extend([time.perf_counter()] * n),
                    )  # fmt: skip
                    arrived += [time.perf_counter()] * (last.get("tokens_predicted", 0) - len(arrived))

                out[workload][str(c)] = closed_loop(reqs, c, serve_one)
                report(f"llama-cpp {llama['precision']}", workload, c, out[workload][str(c)])
            finally:
                out["peakRssMiB"] = max(out["peakRssMiB"], server.status_mib("VmHWM"))
                server.close()
    return out


def child_base(spec: dict) -> dict:
    """One base model and nothing else: the memory yardstick."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.weights import resolve_weights

    weights = resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="")
    model = AutoModelForCausalLM.from_pretrained(weights.path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(weights.path)
    ids = tokenizer("hello", return_tensors="pt")
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)
    return {"rssAfterLoadMiB": rss_mib(), "peakRssMiB": peak_rss_mib(), "precision": "fp32"}


def child_main(kind: str, arg: str) -> None:
    if kind == "gguf-base":
        return child_gguf_base(*json.loads(arg))
    spec = json.loads(Path(arg).read_text())
    if kind == "llama-cpp":  # the server computes; this process only sends requests (no torch threads)
        result = child_llama(spec)
    else:
        import torch

        torch.set_num_threads(spec["threads"])
        if kind in ("tuneforge", "tuneforge-replicas"):
            result = child_tuneforge(spec)
        elif kind == "base":
            result = child_base(spec)
        else:
            result = child_peft(spec, mixed=kind == "peft-mixed")
    Path(spec["result"]).write_text(json.dumps(result))


# --- the side-by-side run ------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cool_down(max_wait: float = COOL_DOWN_S) -> list[float]:
    """Wait (at most max_wait s) until the 1-minute load average is under LOAD_LIMIT: the previous system kept
    both cores busy, and the average takes a minute or two to forget it (it decays by 1/e a minute). A load that
    stays high is someone else's, and the figures say so."""
    deadline = time.time() + max_wait
    while (load := loadavg())[0] > LOAD_LIMIT and time.time() < deadline:
        time.sleep(5)
    return load


def run_child(kind: str, label: str, spec: dict, work: Path, loads: dict) -> dict:
    """One system in its own process; /proc/loadavg before and after it, printed and kept in `loads`."""
    stem = label.replace(" ", "-")
    spec_file, result = work / f"{stem}.spec.json", work / f"{stem}.result.json"
    spec_file.write_text(json.dumps({**spec, "result": str(result)}))
    result.unlink(missing_ok=True)
    before = cool_down()
    print(f"{label}: load average before {fmt_load(before)}", flush=True)
    cmd = [sys.executable, __file__, "--child", kind, str(spec_file)]
    proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    after = loadavg()
    print(f"{label}: load average after  {fmt_load(after)}", flush=True)
    loads[label] = {"before": before, "after": after}
    (work / f"{stem}.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def fmt_load(load: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    cpu, flags = (names[0] if names else platform.processor()), info
    levels = (("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
    simd = next((name for flag, name in levels if flag in flags), "no AVX2")
    return f"{cpu}, {os.cpu_count()} cores, {simd}"


def same_class(results: dict, label: str, kind: str) -> str | None:
    """The run of `kind` (e.g. llama-cpp) whose precision is in the class of `label`'s; None if none ran."""
    cls = PRECISION_CLASS[results[label]["precision"]]
    return next((k for k, r in results.items() if k.split()[0] == kind and PRECISION_CLASS[r["precision"]] == cls), None)


def table(results: dict, workload: str, levels: list[int]) -> str:
    lines = [
        "| streams | system | precision | tokens | output tok/s | vs peft-mixed (same class) | vs llama-cpp (same class) | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) |",
        "|---" * 9 + "|",
    ]
    for c in levels:
        for label, res in results.items():
            r = res[workload][str(c)]
            peft = same_class(results, label, "peft-mixed")
            ref = results[peft][workload][str(c)]["tokensPerSecond"] if peft else None
            llama = same_class(results, label, "llama-cpp")
            lref = results[llama][workload][str(c)]["tokensPerSecond"] if llama else None
            ratio = f"{r['tokensPerSecond'] / ref:.2f}x" if ref else "-"
            lratio = f"{r['tokensPerSecond'] / lref:.2f}x" if lref else "-"
            ttft, itl = f"{r['ttftP50']:.2f} / {r['ttftP99']:.2f}", f"{1000 * r['itlP50']:.0f} / {1000 * r['itlP99']:.0f}"
            system, precision = label.split()
            lines.append(
                f"| {c} | {system} | {precision} | {r['tokens']} | {r['tokensPerSecond']:.1f} | {ratio} | {lratio} | {ttft} | {itl} |"
            )
    return "\n".join(lines)


def memory_table(results: dict, base: dict, loads: dict) -> str:
    lines = [
        "| process | precision | RSS after load (MiB) | peak RSS (MiB) | peak vs one base model | load before / after (1, 5, 15 min) |"
    ]
    lines.append("|---" * 6 + "|")
    for label, r, load in [
        ("base model only (transformers) fp32", base, loads["base"]),
        *((k, r, loads[k]) for k, r in results.items()),
    ]:
        ratio = r["peakRssMiB"] / base["peakRssMiB"]
        system, precision = label.rsplit(" ", 1)
        lines.append(
            f"| {system} | {precision} | {r['rssAfterLoadMiB']:.0f} | {r['peakRssMiB']:.0f} | {ratio:.2f}x | "
            f"{fmt_load(load['before'])}, {fmt_load(load['after'])} |"
        )
    return "\n".join(lines)


def goals(results: dict, workload: str) -> list[str]:
    """The serving goals, measured: at 16 streams >= 4x PEFT's mixed batches, TTFT p99 < 2 s, ITL p99 < 3x its
    p50, tokens/s >= llama.cpp's at the same precision class; one stream within 1.5x of llama.cpp's."""
    lines = []
    for label in [k for k in results if k.startswith("tuneforge ")]:
        at = lambda k, c: results[k][workload].get(str(c)) if k else None
        mine, mine1 = at(label, 16), at(label, 1)
        peft = at(same_class(results, label, "peft-mixed"), 16)
        llama_label = same_class(results, label, "llama-cpp")
        llama, llama1 = at(llama_label, 16), at(llama_label, 1)
        verdict = lambda ok: "met" if ok else "MISSED"
        head = f"- {workload}, {label}:"
        if mine and peft:
            x = mine["tokensPerSecond"] / peft["tokensPerSecond"]
            lines.append(f"{head} 16 streams {x:.2f}x peft-mixed's tokens/s (goal >= 4x): {verdict(x >= 4)}")
        if mine:
            lines.append(f"{head} 16 streams TTFT p99 {mine['ttftP99']:.2f} s (goal < 2 s): {verdict(mine['ttftP99'] < 2)}")
            x = mine["itlP99"] / mine["itlP50"]
            lines.append(f"{head} 16 streams ITL p99 {x:.1f}x its p50 (goal < 3x): {verdict(x < 3)}")
        if mine and llama:
            x = mine["tokensPerSecond"] / llama["tokensPerSecond"]
            lines.append(f"{head} 16 streams {x:.2f}x {llama_label}'s tokens/s (goal >= 1x): {verdict(x >= 1)}")
        if mine1 and llama1:
            x = llama1["tokensPerSecond"] / mine1["tokensPerSecond"]
            lines.append(f"{head} 1 stream: {llama_label} {x:.2f}x TuneForge's tokens/s (goal <= 1.5x): {verdict(x <= 1.5)}")
        if not llama_label:
            lines.append(f"{head} no llama-cpp run in its precision class ({PRECISION_CLASS[results[label]['precision']]})")
        missing = [f"{c} stream{'s' * (c > 1)}" for c in (1, 16) if str(c) not in results[label][workload]]
        if missing:
            lines.append(f"{head} {' and '.join(missing)} not measured (--concurrency): the goals there are not checked")
    return lines


def same_answers(results: dict, probe: str) -> str:
    """Prints each system's greedy answers to the probe prompt (base and each adapter); says, for the
    RESULTS block, whether each llama-cpp run answers as the TuneForge run of its precision class does."""
    for label, a in ((k, r["answers"]) for k, r in results.items() if "answers" in r):
        alike = [name for name, text in a.items() if name != "base" and text == a["base"]]
        print(f"greedy answers of {label} to {probe!r}" + (f" ({', '.join(alike)} answer as the base does)" if alike else ""))
        for name, text in a.items():
            print(f"    {name:<8} {text!r}")
    said = []
    for label in (k for k in results if k.startswith("llama-cpp ") and "answers" in results[k]):
        for tf in (k for k in results if k.startswith("tuneforge ") and same_class(results, k, "llama-cpp") == label):
            mine, theirs = results[tf]["answers"], results[label]["answers"]
            equal = sum(mine[k] == theirs.get(k) for k in mine)
            said.append(
                f"{label} gives {tf}'s greedy answer to a held-out prompt for {equal} of {len(mine)} (base and 4 adapters)"
            )
    return "; ".join(said) + "." if said else ""


def write_results(text: str) -> None:
    current = RESULTS.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in current:
        current = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(current)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated stream counts")
    p.add_argument("--workload", default=",".join(WORKLOADS), help="prompt-heavy, decode-heavy or both (comma-separated)")
    p.add_argument("--max-tokens", type=int, default=32, help="prompt-heavy: at most this many new tokens")
    p.add_argument("--decode-tokens", default="64,256", help="decode-heavy: max_tokens drawn from MIN,MAX (seeded)")
    p.add_argument("--seed", type=int, default=0, help="decode-heavy: seed of the max_tokens draws")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default max(2 C, 16))")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    p.add_argument("--replicas", type=int, default=2, help="tuneforge-replicas: replica processes (threads divided among them)")
    p.add_argument("--tuneforge-precision", default="fp32", help="fp32, bf16 or auto; comma-separated: one run each")
    p.add_argument(
        "--peft-precision", default="fp32", help="fp32 or bf16 (PEFT's weights and compute); comma-separated: one run each"
    )
    p.add_argument("--llama-precision", default=None, help="f32, f16 or q8_0, comma-separated (default: TuneForge's class)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--work", type=Path, default=None, help="adapters and logs; default ~/.cache/tuneforge/bench-serving")
    p.add_argument("--train-only", action="store_true", help="train (or find) the 4 adapters and stop")
    p.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    p.add_argument("--allow-load", action="store_true", help=f"write RESULTS.md even if the 1-min load was above {LOAD_LIMIT}")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        return child_main(args.child[0], args.child[1])
    from tuneforge.engine.precision import pick_dtype
    from tuneforge.engine.weights import cache_dir

    systems, workloads = args.systems.split(","), args.workload.split(",")
    for name, given, allowed in (("--systems", systems, SYSTEMS), ("--workload", workloads, WORKLOADS)):
        if not set(given) <= set(allowed):
            p.error(f"{name}: allowed: {', '.join(allowed)}")
    tf_precisions = args.tuneforge_precision.split(",")
    resolved = [{"float32": "fp32", "bfloat16": "bf16"}[str(pick_dtype(x, "cpu")).removeprefix("torch.")] for x in tf_precisions]
    llama_precisions = (args.llama_precision or LLAMA_FOR[resolved[0]]).split(",")
    if not set(llama_precisions) <= set(LLAMA_PRECISIONS):
        p.error(f"--llama-precision: allowed: {', '.join(LLAMA_PRECISIONS)}")
    peft_precisions = args.peft_precision.split(",")
    if not set(peft_precisions) <= {"fp32", "bf16"}:
        p.error("--peft-precision: allowed: fp32, bf16")
    lo, hi = (int(x) for x in args.decode_tokens.split(","))

    work = args.work or cache_dir() / "bench-serving"
    work.mkdir(parents=True, exist_ok=True)
    runs = train_adapters(work, args.threads)
    if args.train_only:
        return
    llama = {}
    if "llama-cpp" in systems:
        binary = build_llama_server()
        llama = {x: llama_files(work, runs, binary, x) for x in llama_precisions}
    levels = [int(c) for c in args.concurrency.split(",")]
    spec = {"adapters": {k: str(v) for k, v in runs.items()}, "threads": args.threads, "workloads": {}}
    spec["probe"] = json.loads(DATASET.read_text().splitlines()[0])["prompt"]
    for w in workloads:
        n = lambda c: args.requests or max(2 * c, 16)
        spec["workloads"][w] = [(c, requests(w, n(c), args.max_tokens, (lo, hi), args.seed + c)) for c in levels]

    started, loads, results = time.time(), {}, {}
    base = run_child("base", "base", spec, work, loads)
    for system in systems:
        if system == "tuneforge":
            for given, label in zip(tf_precisions, resolved):
                results[f"tuneforge {label}"] = run_child(system, f"tuneforge {label}", {**spec, "precision": given}, work, loads)
        elif system == "tuneforge-replicas":
            for given, label in zip(tf_precisions, resolved):
                name = f"{system} {label}"
                results[name] = run_child(system, name, {**spec, "precision": given, "replicas": args.replicas}, work, loads)
        elif system == "llama-cpp":
            for x in llama_precisions:
                results[f"llama-cpp {x}"] = run_child(system, f"llama-cpp {x}", {**spec, "llama": llama[x]}, work, loads)
        else:
            for x in peft_precisions:
                results[f"{system} {x}"] = run_child(system, f"{system} {x}", {**spec, "peftPrecision": x}, work, loads)
    minutes = (time.time() - started) / 60

    command = "`.venv/bin/python bench/serving.py " + " ".join(sys.argv[1:]) + "`"
    precisions = ", ".join(results)
    text = (
        f"### Figures of {date.today().isoformat()}\n\n{command} on {machine()}, threads {args.threads}; {minutes:.0f} min. "
        f"Stand-in (SmolLM2-135M-Instruct), 4 LoRA adapters (r 8, all 7 projections), greedy; C closed-loop clients, "
        f"{args.requests or 'max(2 C, 16)'} requests per level. Systems and precisions: {precisions} (llama.cpp's KV cache: f32 beside f32 weights, else f16)."
    )
    said = same_answers(results, spec["probe"])
    text += f" {said}\n" if said else "\n"
    for w in workloads:
        what = (
            f"at most {args.max_tokens} new tokens or until the end-of-turn token"
            if w == "prompt-heavy"
            else f"max_tokens drawn from {lo}..{hi} per request, end-of-turn token ignored (every system generates them all)"
        )
        text += f"\n#### {w}: {what}\n\n" + table(results, w, levels) + "\n"
        text += "\n" + "\n".join(goals(results, w)) + "\n"
    text += "\n#### Memory and load\n\n" + memory_table(results, base, loads)
    high = {k: v["before"][0] for k, v in loads.items() if v["before"][0] > LOAD_LIMIT}
    where = ", ".join(f"{k} ({v:.2f})" for k, v in high.items())
    if high:
        text += f"\n\nThe 1-minute load average was above {LOAD_LIMIT} before {where}: other processes shared the cores."
    (work / "results.json").write_text(json.dumps({"base": base, **results, "loads": loads}, indent=1))
    print(text)
    if args.no_write:
        return
    if high and not args.allow_load:
        print(
            f"\nnot writing {RESULTS}: the 1-minute load average was above {LOAD_LIMIT} before {where}, "
            "so other processes shared the cores being timed; rerun on idle cores, or pass --allow-load to write anyway."
        )
        return
    write_results(text)


if __name__ == "__main__":
    main()
