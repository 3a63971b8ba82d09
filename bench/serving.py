"""Serving side by side: TuneForge's engine vs what a user would run today with PEFT, same machine,
same stand-in model, same 4 LoRA adapters, same requests.

    .venv/bin/python bench/serving.py                      # 1, 4, 16, 64 streams; ~25 min on 2 idle cores
    .venv/bin/python bench/serving.py --concurrency 1,16   # a subset
    .venv/bin/python bench/serving.py --no-write           # print only; default rewrites bench/RESULTS.md's serving section

Adapters: 4 LoRA adapters trained on the stand-in with `tuneforge train` on the first 64 lines of
tuneforge/examples/dates.jsonl (1 epoch each, different seeds and learning rates), cached in the work folder
(--work) so reruns skip training.

Requests: the dataset's prompts in file order through the chat template (~45 prompt tokens), adapter i % 4,
greedy, at most --max-tokens new tokens, ending at the end-of-turn token otherwise. At each concurrency C,
C closed-loop clients: each sends the next request of the list as soon as its previous one is answered
(the level's list: max(2 C, 16) requests, identical for every system). The systems, each in its own
process (its peak RSS is its own), one after the other:

  tuneforge      Engine.submit from the C client threads; continuous batching of mixed adapters.
  peft-mixed     a PeftModel with the 4 adapters loaded; a server loop takes every request waiting (up
                 to C), left-pads them and runs one `generate(..., adapter_names=[...])`: PEFT's
                 mixed-adapter batch. Requests arriving meanwhile wait for the next batch.
  peft-switch    the same PeftModel, one request at a time in arrival order, `set_adapter` when the
                 adapter changes: what a user without batching support does.

Figures per system and C: output tokens/s (all tokens generated, the end-of-turn token included, over
the level's wall time), time to first token p50/p99 (submit -> first token decoded), inter-token
latency p50/p99 (gaps between a request's successive tokens), and the process's peak RSS. The memory
row compares the engine's RSS with its 4 adapters attached against a process that loaded only the base
model with transformers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "tuneforge" / "examples" / "dates.jsonl"
RESULTS = ROOT / "bench" / "RESULTS.md"
BASE_MODEL = "meta.llama-3.3-70b-instruct"
# (seed, learning rate): four different adapters of the same task, each one epoch on the first TRAIN_EXAMPLES
# lines (7 optimizer steps: a few minutes each on 2 cores; what they answer matters less than that they are real)
ADAPTERS = {"dates-a": (1, "0.001"), "dates-b": (2, "0.0015"), "dates-c": (3, "0.002"), "dates-d": (4, "0.003")}
TRAIN_EXAMPLES = 64
SYSTEMS = ("tuneforge", "peft-mixed", "peft-switch")
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


def requests(n: int, max_tokens: int) -> list[dict]:
    prompts = [json.loads(line)["prompt"] for line in DATASET.read_text().splitlines() if line.strip()]
    names = list(ADAPTERS)
    return [{"prompt": prompts[i % len(prompts)], "adapter": names[i % len(names)], "max_tokens": max_tokens} for i in range(n)]


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


# --- the systems (each runs in a child process) -------------------------------------------------------


def child_tuneforge(spec: dict) -> dict:
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.serving import AdapterRef, Request
    from tuneforge.serving.engine import Engine, EngineConfig

    weights = resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="")
    engine = Engine(weights, EngineConfig(device="cpu", precision="fp32", max_batch=64, max_queue=1024))
    refs = {name: AdapterRef(name, Path(path)) for name, path in spec["adapters"].items()}
    for ref in refs.values():  # attach the adapters before measuring (an LRU miss reads them from disk)
        engine.generate(Request(prompt="hi", adapter=ref, max_tokens=1))
    out = {"rssAfterLoadMiB": rss_mib()}
    for c, reqs in spec["levels"]:

        def serve_one(i, timeline, reqs=reqs):
            r = reqs[i]
            messages = [{"role": "user", "content": r["prompt"]}]
            stream = engine.submit(Request(messages=messages, adapter=refs[r["adapter"]], max_tokens=r["max_tokens"]))
            for _ in stream:  # a token that shows no text yet reaches the client with the next delta
                timeline.tokens[i] += [time.perf_counter()] * (stream.completion_tokens - len(timeline.tokens[i]))
            timeline.tokens[i] += [time.perf_counter()] * (stream.result().completion_tokens - len(timeline.tokens[i]))

        out[str(c)] = closed_loop(reqs, c, serve_one)
        report("tuneforge", c, out[str(c)])
    out["peakRssMiB"] = peak_rss_mib()
    engine.shutdown()
    return out


def report(system: str, c: int, level: dict) -> None:
    line = f"  {system:<12} C={c:<3} {level['tokensPerSecond']:7.1f} tok/s  TTFT p99 {level['ttftP99']:.2f} s"
    print(line, file=sys.stderr, flush=True)


def load_peft(spec: dict):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.weights import resolve_weights

    weights = resolve_weights("stand-in", model_id=BASE_MODEL, weights_repo="")
    base = AutoModelForCausalLM.from_pretrained(weights.path, dtype=torch.float32)
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


class PeftServer:
    """A server thread in front of one PeftModel. mixed: each `generate` takes every request waiting
    (up to `batch`), with `adapter_names`; otherwise one request per `generate`, after `set_adapter`."""

    def __init__(self, model, tokenizer, reqs: list[dict], batch: int, mixed: bool):
        import queue

        self.model, self.tokenizer, self.reqs, self.batch, self.mixed = model, tokenizer, reqs, batch, mixed
        ids = model.generation_config.eos_token_id
        self.eos = {tokenizer.eos_token_id, *(ids if isinstance(ids, list) else [ids])} - {None}
        self.pending = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

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
        reqs = [self.reqs[i] for i, _, _ in batch]
        chats = [[{"role": "user", "content": r["prompt"]}] for r in reqs]
        texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chats]
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        if self.mixed:
            extra = {"adapter_names": [r["adapter"] for r in reqs]}
        else:
            self.model.set_adapter(reqs[0]["adapter"])
            extra = {}
        clock = StepClock()
        longest = max(r["max_tokens"] for r in reqs)
        pad = self.tokenizer.pad_token_id
        out = self.model.generate(**enc, max_new_tokens=longest, do_sample=False, streamer=clock, pad_token_id=pad, **extra)
        for (i, timeline, _), row in zip(batch, out[:, enc["input_ids"].shape[1] :].tolist()):
            n = next((k + 1 for k, t in enumerate(row) if t in self.eos), len(row))  # rows that ended early are padded
            timeline.tokens[i] = clock.times[:n]


def child_peft(spec: dict, mixed: bool) -> dict:
    model, tokenizer = load_peft(spec)
    out = {"rssAfterLoadMiB": rss_mib()}
    name = "peft-mixed" if mixed else "peft-switch"
    for c, reqs in spec["levels"]:
        server = PeftServer(model, tokenizer, reqs, c if mixed else 1, mixed)
        out[str(c)] = closed_loop(reqs, c, server.serve_one)
        report(name, c, out[str(c)])
    out["peakRssMiB"] = peak_rss_mib()
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
    return {"rssAfterLoadMiB": rss_mib(), "peakRssMiB": peak_rss_mib()}


def child_main(kind: str, spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    if kind == "tuneforge":
        result = child_tuneforge(spec)
    elif kind == "base":
        result = child_base(spec)
    else:
        result = child_peft(spec, mixed=kind == "peft-mixed")
    Path(spec["result"]).write_text(json.dumps(result))


# --- the side-by-side run ------------------------------------------------------------------------------


def run_child(kind: str, spec: dict, work: Path) -> dict:
    spec_file, result = work / f"{kind}.spec.json", work / f"{kind}.result.json"
    spec_file.write_text(json.dumps({**spec, "result": str(result)}))
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, str(spec_file)]
    proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    (work / f"{kind}.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    cpu, flags = (names[0] if names else platform.processor()), info
    levels = (("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
    simd = next((name for flag, name in levels if flag in flags), "no AVX2")
    return f"{cpu}, {os.cpu_count()} cores, {simd}"


def table(results: dict, levels: list[int], base: dict) -> str:
    lines = ["| streams | system | output tok/s | vs peft-mixed | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) |", "|---" * 6 + "|"]
    for c in levels:
        ref = results.get("peft-mixed", {}).get(str(c), {}).get("tokensPerSecond")
        for system in SYSTEMS:
            if system not in results:
                continue
            r = results[system][str(c)]
            ratio = f"{r['tokensPerSecond'] / ref:.2f}x" if ref else "-"
            ttft, itl = f"{r['ttftP50']:.2f} / {r['ttftP99']:.2f}", f"{1000 * r['itlP50']:.0f} / {1000 * r['itlP99']:.0f}"
            lines.append(f"| {c} | {system} | {r['tokensPerSecond']:.1f} | {ratio} | {ttft} | {itl} |")
    lines += ["", "| process | RSS after load (MiB) | peak RSS (MiB) | peak vs one base model |", "|---|---|---|---|"]
    for system, r in [("base model only (transformers)", base), *results.items()]:
        ratio = r["peakRssMiB"] / base["peakRssMiB"]
        lines.append(f"| {system} | {r['rssAfterLoadMiB']:.0f} | {r['peakRssMiB']:.0f} | {ratio:.2f}x |")
    return "\n".join(lines)


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
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--requests", type=int, default=None, help="requests per level (default max(2 C, 16))")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--work", type=Path, default=None, help="adapters and logs; default ~/.cache/tuneforge/bench-serving")
    p.add_argument("--train-only", action="store_true", help="train (or find) the 4 adapters and stop")
    p.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args.child[0], Path(args.child[1]))
    sys.path.insert(0, str(ROOT))
    from tuneforge.engine.weights import cache_dir

    work = args.work or cache_dir() / "bench-serving"
    work.mkdir(parents=True, exist_ok=True)
    runs = train_adapters(work, args.threads)
    if args.train_only:
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    levels_spec = [(c, requests(args.requests or max(2 * c, 16), args.max_tokens)) for c in levels]
    spec = {"adapters": {k: str(v) for k, v in runs.items()}, "threads": args.threads, "levels": levels_spec}
    load = os.getloadavg()
    started = time.time()
    base = run_child("base", spec, work)
    results = {s: run_child(s, spec, work) for s in args.systems.split(",")}
    minutes = (time.time() - started) / 60
    command = "`.venv/bin/python bench/serving.py " + " ".join(sys.argv[1:]) + "`"
    text = (
        f"### Figures of {date.today().isoformat()}\n\n{command} on {machine()}, torch threads {args.threads}; "
        f"load average before the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {minutes:.0f} min. Stand-in "
        f"(SmolLM2-135M-Instruct, fp32), 4 LoRA adapters (r 8, all 7 projections), greedy, at most {args.max_tokens} "
        f"new tokens; C closed-loop clients, max(2 C, 16) requests per level.\n\n" + table(results, levels, base)
    )
    (work / "results.json").write_text(json.dumps({"base": base, **results}, indent=1))
    print(text)
    if not args.no_write:
        write_results(text)


if __name__ == "__main__":
    main()
