"""Take a fine-tuned model elsewhere: a self-contained PEFT folder, a merged Hugging Face folder, or GGUF.

  export_peft    the adapter as PEFT loads it, plus the tokenizer, model.json and a README naming the
                 base weights by their Hugging Face id (no path of this server anywhere).
  export_merged  the adapter folded into the base weights: LoRA W + s B A; (IA)^3 scales the rows of
                 W (keys, values: l * (W x)) or its columns (feed-forward: W (l * x)). Both are exact,
                 so the merged model computes what base + adapter computes, up to rounding to the
                 checkpoint's dtype. Saved with `save_pretrained` (safetensors).
  export_gguf    the merged weights as one GGUF file for llama.cpp / Ollama (f16 or q8_0), written with
                 the `gguf` package: its tensor-name map, llama.cpp's metadata keys, the tokenizer
                 (tokens, types, merges, special ids, chat template). Llama (and Mistral) go out as
                 llama.cpp's `llama` architecture, whose RoPE pairs dimensions (2i, 2i+1): the query
                 and key rows are reordered from Hugging Face's half-split layout, as llama.cpp's own
                 converter does. Cohere is llama.cpp's `command-r` (interleaved RoPE already: no
                 reordering; LayerNorm without bias; `logit_scale`; no separate feed-forward norm).
                 Qwen2/Qwen3 are llama.cpp's `qwen2`/`qwen3` (Hugging Face's RoPE layout: no reordering).
                 The other architectures are refused with the reason (catalog/architectures.py): export
                 `merged` and convert that folder with llama.cpp's own converter.

Every export writes into a temporary sibling and renames it into place: nothing half-written is left.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from tuneforge.catalog import get_model, list_models
from tuneforge.errors import TuneForgeError
from tuneforge.run_folder import RunFolder, RunResult

STAND_IN_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_TYPES = ("f16", "q8_0")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


class ExportError(TuneForgeError):
    """The run cannot be exported as asked; the message says why."""


@dataclass(frozen=True)
class _Run:
    folder: RunFolder
    result: RunResult
    base_dir: Path  # the base weights this server trained on
    base_repo: str  # their Hugging Face id, what a user elsewhere downloads


def _finished_run(run_dir: str | os.PathLike) -> _Run:
    folder = RunFolder(run_dir)
    result = folder.read_result()
    if result is None or not folder.is_finished():
        raise ExportError(f"--model {folder.path.name}: not a finished TuneForge model folder (needs model.json and adapter/)")
    base_dir = Path(result.weights["path"])
    catalog_ids = {m.id for m in list_models()}
    # A base outside the catalog (an imported model, a folder, a Hugging Face id) goes by the name it was trained under.
    repo = (
        STAND_IN_REPO
        if result.stand_in
        else (get_model(result.base_model_id).weights_repo if result.base_model_id in catalog_ids else result.base_model_id)
    )
    return _Run(folder, result, base_dir, repo)


def _fresh_target(target: Path) -> Path:
    """A temporary sibling of `target` to write into; `target` must not exist yet."""
    if target.exists():
        raise ExportError(f"--output {target}: already exists; choose a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    return tmp


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` into place, every file in it with the mode a plain file gets under the
    user's umask first: safetensors writes through a private temporary file, so its weights come out 0600
    (and copy2 carries that mode over from the run's adapter) beside 0644 tokenizer files."""
    probe = tmp.with_name(tmp.name + ".mode")
    probe.unlink(missing_ok=True)  # one a killed export left would keep its old mode
    probe.touch()
    try:
        mode = stat.S_IMODE(probe.stat().st_mode)
    finally:
        probe.unlink()
    for path in [tmp, *tmp.rglob("*")] if tmp.is_dir() else [tmp]:
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    tmp.rename(target)


def _base_needed(run: _Run) -> Path:
    if not (run.base_dir / "config.json").is_file():
        raise ExportError(f"--model {run.folder.path.name}: its base weights are no longer on this machine")
    return run.base_dir


# --- PEFT --------------------------------------------------------------------------------------------


def export_peft(run_dir: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """A folder that loads anywhere with `PeftModel.from_pretrained(base, folder)`; see its README."""
    run, target = _finished_run(run_dir), Path(target_dir)
    base = _base_needed(run)
    tmp = _fresh_target(target)
    try:
        tmp.mkdir()
        shutil.copy2(run.folder.adapter_dir / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        config = json.loads((run.folder.adapter_dir / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = run.base_repo  # was this server's path to the weights
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        for name in _TOKENIZER_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, tmp / name)
        (tmp / "model.json").write_text(json.dumps(_portable_model_json(run), indent=1))
        (tmp / "README.md").write_text(_peft_readme(run))
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _portable_model_json(run: _Run) -> dict:
    """model.json without this server's paths: the weights are named by their Hugging Face id."""
    data = run.result.to_json()
    w = run.result.weights  # a local folder's source and description are its path
    source, description = (w["source"], w["description"]) if run.result.stand_in else (run.base_repo, run.base_repo)
    data["weights"] = {"source": source, "huggingFaceRepo": run.base_repo, "description": description}
    return data


def _peft_readme(run: _Run) -> str:
    r = run.result
    method = "LoRA" if r.method == "LORA" else "T-Few ((IA)^3)"
    stand_in = (
        f"\n**Trained on the stand-in.** This adapter was trained on TuneForge's bundled stand-in, {STAND_IN_REPO} "
        "as shipped in GGUF (Q4_1) and dequantized, not on the weights of "
        f"`{get_model(r.base_model_id).weights_repo}` ({r.base_model_id}). On the original {STAND_IN_REPO} "
        "weights it gives close, not identical, outputs.\n"
        if r.stand_in
        else ""
    )
    return f"""# {run.folder.path.name}: a {method} adapter for {r.base_model_id}

Fine-tuned with TuneForge ({r.steps_run} steps; validation accuracy {r.final_accuracy:.4f}, loss {r.final_loss:.4f}).
Base weights needed: **`{run.base_repo}`** (Hugging Face). The tokenizer files here are the base model's.
{stand_in}
## Load it with PEFT

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{run.base_repo}")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
messages = [{{"role": "user", "content": "..."}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
print(tokenizer.decode(model.generate(ids, max_new_tokens=128)[0, ids.shape[1]:], skip_special_tokens=True))
```

## Serve it with vLLM

```sh
vllm serve {run.base_repo} --enable-lora --lora-modules {run.folder.path.name}=path/to/this/folder --max-lora-rank 64
```
{"" if r.method == "LORA" else "vLLM serves LoRA adapters only: for this T-Few adapter use `tuneforge export --format merged`."}
Files: adapter_config.json + adapter_model.safetensors (PEFT), the tokenizer files, model.json (the
training configuration and metrics, as TuneForge recorded them).
"""


# --- merged ------------------------------------------------------------------------------------------


def merged_model(run_dir: str | os.PathLike):
    """(model, tokenizer) of the base with the run's adapter folded in, in the checkpoint's own dtype."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.serving.adapter_store import read_adapter
    from tuneforge.serving.requests import AdapterRef, ServingError

    run = _finished_run(run_dir)
    base = _base_needed(run)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(base)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}"}
    try:
        adapter = read_adapter(AdapterRef(run.folder.path.name, run.folder.adapter_dir), linears)
    except ServingError as err:
        raise ExportError(str(err)) from err
    with torch.no_grad():
        for name, t in adapter.layers.items():
            linear = linears[name]
            w = linear.weight.float()
            if t.lora_a is not None:
                w += t.lora_bt.t() @ t.lora_a
            if t.ia3_out is not None:
                w *= t.ia3_out[:, None]
                if linear.bias is not None:
                    linear.bias.mul_(t.ia3_out.to(linear.bias.dtype))
            if t.ia3_in is not None:
                w *= t.ia3_in[None, :]
            linear.weight.copy_(w.to(linear.weight.dtype))
    model.eval()
    return model, tokenizer, run


def export_merged(run_dir: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """A Hugging Face model folder (safetensors + tokenizer) with the adapter folded into the weights."""
    model, tokenizer, run = merged_model(run_dir)
    target = Path(target_dir)
    tmp = _fresh_target(target)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "model.json").write_text(json.dumps(_portable_model_json(run), indent=1))
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- GGUF --------------------------------------------------------------------------------------------


def export_gguf(run_dir: str | os.PathLike, target_file: str | os.PathLike, gguf_type: str = "f16") -> Path:
    """One .gguf file of the merged model, f16 or q8_0 (1-D tensors stay f32, as llama.cpp writes them)."""
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"--gguf-type {gguf_type}: allowed: {', '.join(GGUF_TYPES)}")
    from tuneforge.serving.gguf_writer import refusal

    # before the merge (the whole model read and rewritten): an architecture the writer cannot write is refused at once
    base = _base_needed(_finished_run(run_dir))
    why = refusal(json.loads((base / "config.json").read_text()))
    if why:
        raise ExportError(why)
    model, tokenizer, run = merged_model(run_dir)
    target = Path(target_file)
    tmp = _fresh_target(target)
    try:
        from tuneforge.serving.gguf_writer import write_gguf

        write_gguf(model, tokenizer, run.base_dir, tmp, gguf_type, name=run.folder.path.name)
        _publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
