"""A transformers model (Llama, Mistral, Qwen2/2.5, Qwen3, Cohere Command R) as a GGUF file that llama.cpp loads; the
other architectures are refused with the reason (their registry entry's `gguf_refusal`).

Written with the `gguf` package (llama.cpp's own Python library): its tensor-name map (HF name ->
blk.N.attn_q.weight ...), its key names, its Q8_0 quantizer, its SpecialVocab (merges, special token
ids, chat template). What the package leaves to each converter is done here: the architecture's
hyperparameters, the token list and types, the RoPE reordering of Llama's query/key rows, and the
name of the pre-tokenizer (llama.cpp picks its text-splitting regex by that name).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from tuneforge.catalog.architectures import ARCHITECTURES
from tuneforge.errors import TuneForgeError

# llama.cpp architectures this writer writes, by their GGUF name (each registry entry's `gguf`)
WRITTEN = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "command-r": gguf.MODEL_ARCH.COMMAND_R,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
}


def refusal(config: dict) -> str | None:
    """Why this writer cannot write the model of this config.json (a dict); None when it can."""
    model_type = config.get("model_type")
    entry = ARCHITECTURES.get(model_type)
    if entry is None:
        return f"GGUF export: architecture {model_type!r} is not supported"
    if entry.gguf not in WRITTEN:
        return f"GGUF export: {entry.gguf_refusal}"
    if entry.gguf in ("qwen2", "qwen3") and config.get("use_sliding_window"):
        # Released Qwen2.5/Qwen3 checkpoints do not use it; llama.cpp's qwen2/qwen3 would attend past the window.
        return (
            f"GGUF export: this {entry.name} model uses a sliding window (use_sliding_window), which llama.cpp's "
            f"{entry.gguf} architecture does not apply; export `merged` instead"
        )
    return None


FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
# Llama 3's pre-tokenizer regex (tokenizer.json), which llama.cpp calls "llama-bpe"
LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
# Qwen2's (Qwen2.5 and Qwen3 share the tokenizer): Llama 3's with single digits; llama.cpp's "qwen2"
QWEN2_SPLIT = LLAMA3_SPLIT.replace("\\p{N}{1,3}", "\\p{N}")


def write_gguf(model, tokenizer, tokenizer_dir: Path, path: Path, gguf_type: str, name: str) -> None:
    config = model.config
    why = refusal(config.to_dict())
    if why:
        raise TuneForgeError(why)
    arch = WRITTEN[ARCHITECTURES[config.model_type].gguf]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[gguf_type])
    if gguf_type != "f16":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    head_dim = _hyperparameters(writer, config, arch)
    _tokenizer(writer, tokenizer, tokenizer_dir, config, arch)
    _tensors(writer, model, config, arch, head_dim, gguf_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _hyperparameters(writer: gguf.GGUFWriter, config, arch) -> int:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = _rope(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope.get("rope_type", "default") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if arch == gguf.MODEL_ARCH.COMMAND_R:
        writer.add_layer_norm_eps(config.layer_norm_eps)
        writer.add_logit_scale(config.logit_scale)
    else:
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    return head_dim


def _rope(config) -> dict:
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") not in ("default", "linear", "llama3"):
        raise TuneForgeError(f"GGUF export: RoPE scaling {rope['rope_type']!r} is not supported (default, linear, llama3 are)")
    return rope


def _llama3_rope_factors(config) -> np.ndarray:
    """llama.cpp's rope_freqs tensor: how much Llama 3.1's RoPE scaling divides each frequency, taken
    from transformers' own llama3 RoPE initialisation against the unscaled one."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    rope = _rope(config)
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    plain = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return (plain / scaled.double()).float().numpy()


def _pre_tokenizer(tokenizer_json: dict, arch) -> str:
    """The llama.cpp name of this tokenizer's pre-tokenizer, recognised from tokenizer.json."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "command-r" if arch == gguf.MODEL_ARCH.COMMAND_R else "smollm"  # the same regex in llama.cpp
    if kinds == ["Split", "ByteLevel"] and parts[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    if kinds == ["Split", "ByteLevel"] and parts[0].get("pattern", {}).get("Regex") == QWEN2_SPLIT:
        return "qwen2"
    raise TuneForgeError(f"GGUF export: unknown pre-tokenizer {json.dumps(pre)[:200]}; llama.cpp must know how it splits text")


def _tokenizer(writer: gguf.GGUFWriter, tokenizer, tokenizer_dir: Path, config, arch) -> None:
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    if data["model"]["type"] != "BPE":
        raise TuneForgeError(f"GGUF export supports byte-level BPE tokenizers, not {data['model']['type']}")
    vocab = {i: t for t, i in data["model"]["vocab"].items()}
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    if max([*vocab, *added]) >= config.vocab_size:
        raise TuneForgeError("GGUF export: the tokenizer has more tokens than the model's vocabulary")
    tokens, types = [], []
    for i in range(config.vocab_size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in vocab:
            tokens.append(vocab[i])
            types.append(gguf.TokenType.NORMAL)
        else:  # rows of the embedding no token uses (vocabularies padded to a round size)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(data, arch))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=config.vocab_size)
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _unpermute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's Llama query/key rows rotate halves (i, i + d/2); llama.cpp's llama rotates pairs
    (2i, 2i + 1). Interleave each head's two halves back."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(writer: gguf.GGUFWriter, model, config, arch, head_dim: int, gguf_type: str) -> None:
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when there is no output tensor
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TuneForgeError(f"GGUF export: no llama.cpp name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads
            data = _unpermute_rope(data, heads)
        _add(writer, name, data, gguf_type)
    if arch == gguf.MODEL_ARCH.LLAMA and _rope(config).get("rope_type") == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(config))


def _add(writer: gguf.GGUFWriter, name: str, data: np.ndarray, gguf_type: str) -> None:
    if data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        q = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))
