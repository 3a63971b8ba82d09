"""The decoder architectures TuneForge trains, serves and exports, as data (one entry per config.json
`model_type`), and the check of a model's config.json against them.

An architecture is supported when its decoder layers are what the adapters (engine/adapters.py),
the loss (engine/loss.py), FSDP2 wrapping (engine/distributed.py), the serving engine's per-row
adapters and attention (serving/) and the exporters (serving/export.py) assume: `model.model.layers`
of blocks whose projections are plain `nn.Linear` layers with the names below, run by transformers'
own forward. What differs between families (tied embeddings, sliding windows, logit soft-capping,
QK-norm, fused projections) is listed per entry with how it is handled; each entry is tested with a
tiny random model (tests/test_architectures.py): a LoRA (T-Few for Cohere) run whose adapter loads in
PEFT with equal logits, serving greedy output equal to `PeftModel.generate`, a merged export that
transformers loads with equal logits.

Stdlib only: the service imports this to check a model before anything loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass

LORA, TFEW = "LORA", "TFEW"

# The projections of a decoder block with separate q/k/v and gate/up (Llama's names).
_QKVO_FFN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# (IA)^3 (Liu et al. 2022, section 3.3): keys, values, and the feed-forward intermediate activation (down_proj's input).
_IA3 = ("k_proj", "v_proj", "down_proj")
_IA3_FEEDFORWARD = ("down_proj",)

# Handling notes shared by several entries.
_SLIDING = (
    "sliding window",
    "training and PEFT run transformers' own masks; the serving engine's attention masks each sliding "
    "layer's keys to the last `sliding_window` positions (transformers' rule), so long prompts and replies "
    "are served as the model was trained",
)
_TIED = (
    "tied embeddings",
    "the LM head is the input embedding matrix: loading re-ties it, adapters never touch it, and the merged "
    "export writes the one tensor",
)
_QK_NORM = (
    "QK-norm",
    "RMSNorm of each head's queries and keys inside transformers' attention module, before RoPE; the "
    "adapters wrap q_proj/k_proj, whose outputs it normalises, so nothing changes for them",
)


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    name: str  # for people: "Llama", "Gemma 2"
    causal_lm: str  # the transformers class that loads it (config.json's `architectures`)
    method: str  # the fine-tuning method family imported models of it get: LORA or TFEW
    lora_targets: tuple[str, ...]  # every linear layer of a decoder block (QLoRA, section 4)
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]  # of ia3_targets, those scaled on their input
    # (what is special, how TuneForge handles it): tied embeddings, sliding windows, soft-capping, QK-norm, fused projections
    features: tuple[tuple[str, str], ...] = ()
    # llama.cpp's name for it in a GGUF file (general.architecture); None: the GGUF export refuses, saying `gguf_refusal`
    gguf: str | None = None
    gguf_refusal: str = ""
    logit_scale: bool = False  # the head multiplies its logits by config.logit_scale (Cohere)
    softcap_final: bool = False  # the head soft-caps its logits: cap * tanh(logits / cap), cap = final_logit_softcapping
    example: str = ""  # a public checkpoint of it


_GGUF_SPECIAL = (
    "the GGUF writer (serving/gguf_writer.py) writes llama.cpp's llama, command-r, qwen2 and qwen3 layouts only; {name} needs {why}, "
    "which it does not write: export `merged` (safetensors) and convert it with llama.cpp's convert_hf_to_gguf.py"
)

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture(
            "llama",
            "Llama",
            "LlamaForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(("tied embeddings (Llama 3.2 1B/3B)", _TIED[1]),),
            gguf="llama",
            example="meta-llama/Llama-3.2-1B-Instruct",
        ),
        Architecture(
            "mistral",
            "Mistral",
            "MistralForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(("sliding window (config sliding_window, every layer; null in v0.2 and later)", _SLIDING[1]),),
            gguf="llama",  # llama.cpp reads Mistral as the llama architecture (same tensors)
            example="mistralai/Mistral-7B-Instruct-v0.3",
        ),
        Architecture(
            "qwen2",
            "Qwen2 / Qwen2.5",
            "Qwen2ForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(
                ("biases on q/k/v", "kept in the frozen base linear layers; LoRA adds to their output"),
                ("tied embeddings (0.5B-3B)", _TIED[1]),
                ("sliding window (use_sliding_window, the layers above max_window_layers)", _SLIDING[1]),
            ),
            gguf="qwen2",  # llama.cpp applies no sliding window: a model that uses one is refused
            example="Qwen/Qwen2.5-0.5B-Instruct",
        ),
        Architecture(
            "qwen3",
            "Qwen3",
            "Qwen3ForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(_QK_NORM, ("tied embeddings (0.6B-4B)", _TIED[1]), _SLIDING),
            gguf="qwen3",  # likewise
            example="Qwen/Qwen3-0.6B",
        ),
        Architecture(
            "gemma2",
            "Gemma 2",
            "Gemma2ForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(
                _TIED,
                ("sliding window (every other layer)", _SLIDING[1]),
                (
                    "attention logit soft-capping (attn_logit_softcapping)",
                    "transformers' eager attention applies it in training and PEFT; the serving engine's attention "
                    "computes softcap * tanh(scores / softcap) before the mask and softmax",
                ),
                (
                    "final logit soft-capping (final_logit_softcapping)",
                    "the loss's head (engine/loss.py head_logits) applies it as Gemma2ForCausalLM does; serving runs "
                    "the model's own forward",
                ),
                ("embeddings scaled by sqrt(hidden), (1 + w) RMSNorm, pre- and post-norms", "inside transformers' forward"),
            ),
            gguf_refusal=_GGUF_SPECIAL.format(name="Gemma 2", why="its post-norms and soft-capping metadata"),
            softcap_final=True,
            example="google/gemma-2-2b-it",
        ),
        Architecture(
            "gemma3_text",
            "Gemma 3 text",
            "Gemma3ForCausalLM",
            LORA,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(
                _TIED,
                ("sliding window (5 local layers to 1 global)", _SLIDING[1]),
                _QK_NORM,
                ("separate RoPE bases for local and global layers", "inside transformers' forward"),
                ("final logit soft-capping when the config sets it", "applied by the loss's head as by the model"),
            ),
            gguf_refusal=_GGUF_SPECIAL.format(name="Gemma 3 text", why="its QK-norm and post-norm tensors"),
            softcap_final=True,
            example="google/gemma-3-1b-it",
        ),
        Architecture(
            "phi3",
            "Phi-3 / Phi-4",
            "Phi3ForCausalLM",
            LORA,
            ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
            ("qkv_proj", "down_proj"),
            _IA3_FEEDFORWARD,
            features=(
                (
                    "fused projections (qkv_proj, gate_up_proj)",
                    "LoRA adapts each fused layer as one linear layer, as PEFT does for Phi-3 (its target list is "
                    "qkv_proj, o_proj, gate_up_proj, down_proj): the same number of layers adapted, one rank shared "
                    "by q, k and v; (IA)^3 would scale the queries too, so Phi-3 is offered LoRA only",
                ),
                ("sliding window (Phi-3 mini 4k)", _SLIDING[1]),
                ("partial rotary and LongRoPE (128k models)", "inside transformers' forward"),
            ),
            gguf_refusal=_GGUF_SPECIAL.format(name="Phi-3 / Phi-4", why="its fused qkv and gate/up tensors"),
            example="microsoft/Phi-3.5-mini-instruct",
        ),
        Architecture(
            "cohere",
            "Cohere Command R",
            "CohereForCausalLM",
            TFEW,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(
                _TIED,
                ("logit scale (logit_scale)", "the loss's head multiplies by it as CohereForCausalLM does"),
                ("parallel attention and feed-forward, LayerNorm", "inside transformers' forward"),
                ("QK-norm (use_qk_norm, Command R+)", _QK_NORM[1]),
            ),
            gguf="command-r",
            logit_scale=True,
            example="CohereForAI/c4ai-command-r-v01",
        ),
        Architecture(
            "cohere2",
            "Cohere Command R7B / Command A",
            "Cohere2ForCausalLM",
            TFEW,
            _QKVO_FFN,
            _IA3,
            _IA3_FEEDFORWARD,
            features=(
                _TIED,
                ("logit scale (logit_scale)", "the loss's head multiplies by it as Cohere2ForCausalLM does"),
                ("sliding window (3 local layers to 1 global without RoPE)", _SLIDING[1]),
                ("parallel attention and feed-forward, LayerNorm", "inside transformers' forward"),
            ),
            gguf_refusal=_GGUF_SPECIAL.format(
                name="Cohere Command R7B / Command A", why="its parallel block, logit scale and window pattern"
            ),
            logit_scale=True,
            example="CohereForAI/c4ai-command-r7b-12-2024",
        ),
    )
}

# Known model types that are not supported, and why (the message an import or a run fails with).
_NOT_A_DECODER = "TuneForge trains and serves text-only decoder models (a causal LM head over text tokens)"
REFUSED: dict[str, str] = {
    "gemma3": (
        "a Gemma 3 vision-language checkpoint (Gemma3ForConditionalGeneration: a SigLIP vision tower and a text decoder "
        f"under language_model); {_NOT_A_DECODER}: use a text-only Gemma 3 checkpoint (Gemma3ForCausalLM, "
        "model_type gemma3_text, e.g. google/gemma-3-1b-it)"
    ),
    "gemma3n": f"Gemma 3n is a multimodal model with per-layer embeddings and AltUp blocks; {_NOT_A_DECODER}",
    "mllama": f"Llama 3.2 Vision is a vision-language model; {_NOT_A_DECODER}",
    "llama4": "Llama 4 is a mixture-of-experts vision-language model: its experts are not nn.Linear layers the adapters wrap",
    "qwen2_vl": f"Qwen2-VL is a vision-language model; {_NOT_A_DECODER}",
    "qwen2_5_vl": f"Qwen2.5-VL is a vision-language model; {_NOT_A_DECODER}",
    "mixtral": "Mixtral is a mixture of experts: per-expert adapters, routing and expert-parallel sharding are not implemented",
    "qwen2_moe": "Qwen2-MoE is a mixture of experts: per-expert adapters and routing are not implemented",
    "qwen3_moe": "Qwen3-MoE is a mixture of experts: per-expert adapters and routing are not implemented",
    "phimoe": "Phi-3.5-MoE is a mixture of experts: per-expert adapters and routing are not implemented",
    "deepseek_v3": "DeepSeek-V3 is a mixture of experts with multi-head latent attention: neither is implemented",
    "phi3small": "Phi-3-small uses block-sparse attention and a fused GEGELU feed-forward that the serving attention does not compute",
    "phi4_multimodal": f"Phi-4-multimodal carries vision and audio encoders with LoRA built in; {_NOT_A_DECODER}",
    "gemma": "Gemma (1) is not in the tested set; Gemma 2 (gemma2) and Gemma 3 (gemma3_text) are",
    "phi": "Phi-1/Phi-2 name their projections differently (dense, fc1/fc2) and are not in the tested set; Phi-3 and Phi-4 (phi3) are",
    "gpt2": "GPT-2 uses fused Conv1D projections (c_attn) that the adapters do not wrap",
    "mamba": "Mamba is a state-space model, not an attention decoder",
    "mamba2": "Mamba-2 is a state-space model, not an attention decoder",
}

# config.json fields every supported architecture needs, with what they size (all positive integers).
REQUIRED = {
    "vocab_size": "the embeddings and the LM head",
    "hidden_size": "every layer",
    "intermediate_size": "the feed-forward layers",
    "num_hidden_layers": "the decoder",
    "num_attention_heads": "attention",
}


def supported() -> list[str]:
    """The supported model_type values, in the registry's order."""
    return list(ARCHITECTURES)


def architecture(model_type: str) -> Architecture | None:
    """The registry entry of a supported model_type; None when it is not supported (see `check_config`)."""
    return ARCHITECTURES.get(model_type)


def supported_list() -> str:
    """The supported architectures as one phrase for messages: "llama (Llama), mistral (Mistral), ..."."""
    return ", ".join(f"{a.model_type} ({a.name})" for a in ARCHITECTURES.values())


def check_config(config: dict) -> list[str]:
    """Every problem with a model's config.json (as a dict) that keeps TuneForge from training, serving or
    exporting it; [] when there is none. Each problem is one sentence naming the field and its value."""
    if not isinstance(config, dict):
        return ["config.json: not a JSON object"]
    model_type = config.get("model_type")
    if model_type is None:
        return [f"config.json: no model_type; supported architectures: {supported_list()}"]
    entry = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if entry is None:
        why = REFUSED.get(model_type) if isinstance(model_type, str) else "model_type is not a string"
        return [
            f"config.json: architecture {model_type!r} is not supported{f' ({why})' if why else ''}; "
            f"supported architectures: {supported_list()}"
        ]
    problems = []
    for name, sizes in REQUIRED.items():
        value = config.get(name)
        if value is None:
            problems.append(f"config.json: no {name} (it sizes {sizes}; {entry.name} configs have one)")
        elif not _positive_int(value):
            problems.append(f"config.json: {name} {value!r} is not a positive integer")
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if kv_heads is not None and not _positive_int(kv_heads):
        problems.append(f"config.json: num_key_value_heads {kv_heads!r} is not a positive integer")
    elif _positive_int(heads) and _positive_int(kv_heads) and heads % kv_heads:
        problems.append(f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    hidden, head_dim = config.get("hidden_size"), config.get("head_dim")
    if head_dim is not None and not _positive_int(head_dim):
        problems.append(f"config.json: head_dim {head_dim!r} is not a positive integer")
    elif head_dim is None and _positive_int(hidden) and _positive_int(heads) and hidden % heads:
        problems.append(f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and no head_dim)")
    classes = config.get("architectures")
    if isinstance(classes, list) and classes and entry.causal_lm not in classes:
        problems.append(
            f"config.json: architectures {classes!r} does not name {entry.causal_lm}: TuneForge loads a {entry.name} "
            "checkpoint with its causal LM head"
        )
    if model_type == "gemma3_text" and config.get("use_bidirectional_attention"):
        problems.append(
            "config.json: use_bidirectional_attention true: an embedding model (EmbeddingGemma), not a causal decoder"
        )
    quantization = config.get("quantization_config")
    if quantization is not None:
        method = quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else quantization
        problems.append(
            f"config.json: quantization_config ({method!r}): pre-quantized checkpoints are not supported; import the "
            "bf16/fp16/fp32 weights (TuneForge quantizes to nf4 itself where a run asks for it)"
        )
    window = config.get("sliding_window")
    if window is not None and not _positive_int(window):
        problems.append(f"config.json: sliding_window {window!r} is not a positive integer or null")
    for name in ("attn_logit_softcapping", "final_logit_softcapping", "logit_scale"):
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            problems.append(f"config.json: {name} {value!r} is not a positive number or null")
    return problems


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
