"""Check a Hugging Face model folder before anything loads it, and report every problem at once.

What an import (`/20231130/importedModels`, `tuneforge models import`) needs to know before it
accepts a folder: config.json is there and names a supported architecture
(`tuneforge.catalog.architectures.check_config`); every safetensors shard is there (a single
model.safetensors, or every file of model.safetensors.index.json's weight_map) and whole (its
header's offsets match its size); the tensors the config implies are there with the shapes it implies
(embeddings [vocab, hidden], each layer's attention and feed-forward projections from hidden size,
heads, key-value heads, head_dim and intermediate size, the LM head unless the embeddings are tied);
the weights are floating point; a tokenizer and its chat template are there. Messages name files
relative to the folder, never where the folder is.

Stdlib only: a safetensors file starts with an 8-byte little-endian header length and a JSON header
({name: {dtype, shape, data_offsets}}), which is all this reads, so checking a 140 GB model reads
a few megabytes and never imports torch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.catalog.architectures import architecture, check_config

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on a header
SHOWN = 8  # problems of one kind listed by name; the rest are counted
MAX_LAYERS = 1024  # Llama 3.1 405B has 126: a config beyond this is wrong, and its expected tensors are not listed
# transformers' default for tie_word_embeddings when a config.json leaves it out, per model_type.
TIED_BY_DEFAULT = {"gemma2", "gemma3_text", "cohere", "cohere2"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


@dataclass
class FolderReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was found, for the import's log
    config: dict[str, Any] | None = None
    model_type: str | None = None
    size_bytes: int = 0
    parameters: int = 0
    dtype: str | None = None  # e.g. "bfloat16"; "mixed (bfloat16, float32)" when the tensors differ

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """Every problem in one text (an import's lifecycleDetails)."""
        return f"{len(self.problems)} problem(s) with the model folder: " + "; ".join(self.problems)


def _listed(items: list[str], what: str) -> str:
    shown = ", ".join(items[:SHOWN])
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{what}: {shown}{more}"


def _read_json(folder: Path, name: str, report: FolderReport) -> Any:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        report.problems.append(f"{name}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})")
    except (OSError, UnicodeDecodeError):
        report.problems.append(f"{name}: cannot be read as UTF-8 text")
    return None


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """A safetensors file's tensors {name: {dtype, shape, data_offsets}}; ValueError saying what is
    wrong (not a safetensors file, a truncated file)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError("not a safetensors file (its header length is larger than the file)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            start, stop = info["data_offsets"]
            shape, dtype = list(info["shape"]), str(info["dtype"])
            if not all(type(n) is int and n >= 0 for n in (start, stop, *shape)) or stop < start:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name}: its header entry has no valid dtype, shape and data_offsets") from None
        count = 1
        for dim in shape:
            count *= dim
        if dtype in DTYPE_BYTES and stop - start != count * DTYPE_BYTES[dtype]:
            raise ValueError(f"tensor {name}: {stop - start} bytes stored for shape {shape} of {dtype}")
        end = max(end, stop)
    if 8 + length + end != size:
        raise ValueError(f"{size:,} bytes, but its header describes {8 + length + end:,}: the file is truncated or damaged")
    return header


def _weights(folder: Path, report: FolderReport) -> dict[str, dict[str, Any]]:
    """Every tensor of the folder's safetensors weights {name: header entry}, checking that each shard is
    there and whole and that the index's weight_map matches the shards."""
    if (folder / INDEX).is_file():
        index = _read_json(folder, INDEX, report)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            if index is not None:
                report.problems.append(f"{INDEX}: no weight_map (tensor name -> shard file)")
            return {}
        shards: dict[str, list[str]] = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(str(shard), []).append(tensor)
    elif (folder / SINGLE).is_file():
        shards = {SINGLE: []}
    else:
        loose = sorted(p.name for p in folder.glob("*.safetensors"))
        if loose:
            report.problems.append(_listed(loose, f"{len(loose)} .safetensors file(s) but no {INDEX} naming their tensors"))
        elif list(folder.glob("pytorch_model*.bin")) or (folder / "consolidated.00.pth").exists():
            report.problems.append(
                "only PyTorch pickle weights (.bin/.pth): TuneForge imports safetensors; save the model with "
                "save_pretrained(..., safe_serialization=True)"
            )
        else:
            report.problems.append(f"no weights: neither {SINGLE} nor {INDEX}")
        return {}
    tensors: dict[str, dict[str, Any]] = {}
    missing_shards = []
    for shard, expected in shards.items():
        path = folder / shard
        if "/" in shard or "\\" in shard or shard.startswith(".") or not shard.endswith(".safetensors"):
            report.problems.append(f"{INDEX}: shard {shard[:200]!r} is not a .safetensors file name in the folder")
            continue
        if not path.is_file():
            missing_shards.append(shard)
            continue
        try:
            header = read_header(path)
        except (ValueError, OSError) as err:
            report.problems.append(f"{shard}: {err}")
            continue
        absent = [name for name in expected if name not in header]
        if absent:
            report.problems.append(_listed(absent, f"{shard}: {len(absent)} tensor(s) the index places there are missing"))
        for name, info in header.items():
            tensors[name] = {**info, "file": shard}
    if missing_shards:
        report.problems.append(_listed(missing_shards, f"{len(missing_shards)} of {len(shards)} shard(s) missing"))
    return tensors


def expected_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """The tensors (and shapes) a supported architecture's config.json implies, as transformers saves
    them; biases, norms and buffers are left out (they vary by family and size nothing)."""
    vocab, hidden, heads = config["vocab_size"], config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter, layers = config["intermediate_size"], config["num_hidden_layers"]
    shapes = {"model.embed_tokens.weight": [vocab, hidden]}
    tied = config.get("tie_word_embeddings", config.get("model_type") in TIED_BY_DEFAULT)
    if not tied:
        shapes["lm_head.weight"] = [vocab, hidden]
    fused = config.get("model_type") == "phi3"
    for i in range(layers):
        p = f"model.layers.{i}."
        if fused:
            shapes[p + "self_attn.qkv_proj.weight"] = [(heads + 2 * kv_heads) * head_dim, hidden]
            shapes[p + "mlp.gate_up_proj.weight"] = [2 * inter, hidden]
        else:
            shapes[p + "self_attn.q_proj.weight"] = [heads * head_dim, hidden]
            shapes[p + "self_attn.k_proj.weight"] = [kv_heads * head_dim, hidden]
            shapes[p + "self_attn.v_proj.weight"] = [kv_heads * head_dim, hidden]
            shapes[p + "mlp.gate_proj.weight"] = [inter, hidden]
            shapes[p + "mlp.up_proj.weight"] = [inter, hidden]
        shapes[p + "self_attn.o_proj.weight"] = [hidden, heads * head_dim]
        shapes[p + "mlp.down_proj.weight"] = [hidden, inter]
    return shapes


def _check_tensors(config: dict[str, Any], tensors: dict[str, dict[str, Any]], report: FolderReport) -> None:
    expected = expected_shapes(config)
    missing = [name for name in expected if name not in tensors]
    if missing:
        report.problems.append(_listed(missing, f"{len(missing)} tensor(s) the config implies are missing"))
    wrong = [
        f"{name} is {tensors[name]['shape']} in {tensors[name]['file']}, the config implies {shape}"
        for name, shape in expected.items()
        if name in tensors and list(tensors[name]["shape"]) != shape
    ]
    if wrong:
        report.problems.append(_listed(wrong, f"{len(wrong)} tensor(s) do not have the shape config.json implies"))
    layers = config["num_hidden_layers"]
    beyond = sorted(
        {int(parts[2]) for name in tensors if (parts := name.split("."))[:2] == ["model", "layers"] and parts[2].isdigit()}
        - set(range(layers))
    )
    if beyond:
        report.problems.append(
            _listed([str(i) for i in beyond], f"tensors for layers config.json does not have (num_hidden_layers {layers})")
        )


def _check_dtypes(tensors: dict[str, dict[str, Any]], report: FolderReport) -> None:
    other = sorted(f"{name} ({info['dtype']})" for name, info in tensors.items() if info["dtype"] not in FLOAT_DTYPES)
    if other:
        report.problems.append(
            _listed(
                other, f"{len(other)} tensor(s) are not float32, float16 or bfloat16 (quantized checkpoints are not supported)"
            )
        )
    found = sorted({FLOAT_DTYPES[info["dtype"]] for info in tensors.values() if info["dtype"] in FLOAT_DTYPES})
    report.dtype = found[0] if len(found) == 1 else f"mixed ({', '.join(found)})" if found else None
    for info in tensors.values():
        count = 1
        for dim in info["shape"]:
            count *= dim
        report.parameters += count


def _check_tokenizer(folder: Path, report: FolderReport) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        report.problems.append("no tokenizer: neither tokenizer.json nor tokenizer.model")
    template = None
    if (folder / "tokenizer_config.json").is_file():
        tokenizer_config = _read_json(folder, "tokenizer_config.json", report)
        if isinstance(tokenizer_config, dict) and tokenizer_config.get("chat_template"):
            template = "tokenizer_config.json"
    for name in ("chat_template.jinja", "chat_template.json"):
        if template is None and (folder / name).is_file():
            template = name
    if template is None:
        report.problems.append(
            "no chat template (tokenizer_config.json chat_template, or chat_template.jinja): TuneForge formats every "
            "training prompt and every chat request with the model's chat template; add the template of the model's "
            "instruct release, or import the instruct release"
        )
    else:
        report.notes.append(f"chat template from {template}")


def check(folder: Path) -> FolderReport:
    """Everything wrong with a model folder (FolderReport.problems, all at once), and what it holds."""
    report = FolderReport()
    files = [p for p in folder.rglob("*") if p.is_file()]
    report.size_bytes = sum(p.stat().st_size for p in files)
    config = None
    if (folder / "config.json").is_file():
        config = _read_json(folder, "config.json", report)
        if config is not None and not isinstance(config, dict):
            report.problems.append("config.json: not a JSON object")
            config = None
    else:
        report.problems.append("no config.json")
    config_problems = check_config(config) if config is not None else ["config.json missing or unreadable"]
    if config is not None:
        report.config = config
        report.problems.extend(config_problems)
        if isinstance(config.get("model_type"), str):
            report.model_type = config["model_type"]
    tensors = _weights(folder, report)
    supported = config is not None and not config_problems and architecture(config["model_type"]) is not None
    if supported and config["num_hidden_layers"] > MAX_LAYERS:
        report.problems.append(f"config.json: num_hidden_layers {config['num_hidden_layers']} is more than any model has")
        supported = False
    if tensors and supported:
        _check_tensors(config, tensors, report)
    if tensors:
        _check_dtypes(tensors, report)
    _check_tokenizer(folder, report)
    shards = len({info["file"] for info in tensors.values()})
    report.notes.insert(
        0,
        f"{report.model_type or 'unknown architecture'}, {_amount(report.parameters, '')} parameters"
        f" ({report.dtype or 'no dtype'}), {_amount(report.size_bytes, 'B')} in {len(files)} files, {shards} shard(s)",
    )
    return report


def _amount(n: int, unit: str) -> str:
    """1234567 -> "1.23 M" (decimal prefixes, as model sizes are given)."""
    for prefix, scale in (("T", 1e12), ("G" if unit else "B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n} {unit}".rstrip()
