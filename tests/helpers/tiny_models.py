"""Tiny random checkpoints of every supported architecture for tests: built in seconds, saved as HF folders.

They carry a small byte-level BPE tokenizer with a ChatML template (the stand-in's format), so
every code path that needs a real tokenizer, chat template and `save_pretrained` folder runs on
them exactly as on real weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# The catalog models the tiny checkpoints stand in for: a LoRA base (the tiny Llama) and a T-Few base
# (the tiny Cohere).
LLAMA = "meta.llama-3.3-70b-instruct"
COHERE = "cohere.command-r-08-2024"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Convert the date to ISO 8601: March 5th, 2021 -> 2021-03-05",
    "the quick brown fox jumps over the lazy dog 0123456789",
    "January February March April May June July August September October November December",
    "user assistant system prompt completion answer question yes no",
]


def build_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None)
    fast.chat_template = CHATML
    return fast


def build_model(arch: str = "llama", vocab_size: int = 320, hidden: int = 32, layers: int = 2, seed: int = 0):
    import torch
    from transformers import CohereConfig, CohereForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=2,
        # Larger than the usual 0.02 so logits are not near-uniform at init and a few adapter steps
        # move the loss visibly.
        initializer_range=0.3,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    if arch == "cohere":
        return CohereForCausalLM(CohereConfig(**common, logit_scale=2.0))
    if arch in TINY_EXTRA:
        return _build_other(arch, common)
    raise ValueError(f"unknown tiny architecture {arch!r}")


# A sliding window short enough that the tests' prompts and replies cross it (real models: 4096).
TINY_WINDOW = 12

# The other supported architectures (tuneforge/catalog/architectures.py), each with what makes it
# special switched on at a size the tests reach: windows crossed, soft-caps that bite, QK-norm, fused
# projections, tied embeddings. The Gemmas are untied here although real ones tie: tied, their
# embeddings (scaled by sqrt(hidden)) dominate a random model's residual stream and it echoes its last
# input token forever, which would make any greedy comparison vacuous.
TINY_EXTRA = {
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=TINY_WINDOW)),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=1, tie_word_embeddings=True),
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(head_dim=16, use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=1),
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=TINY_WINDOW,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            tie_word_embeddings=False,
        ),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=TINY_WINDOW,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=5.0,
            tie_word_embeddings=False,
        ),
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=TINY_WINDOW)),
    "cohere2": (
        "Cohere2Config",
        "Cohere2ForCausalLM",
        dict(head_dim=16, logit_scale=2.0, sliding_window=TINY_WINDOW, layer_types=["sliding_attention", "full_attention"]),
    ),
}


def _build_other(arch: str, common: dict):
    import transformers

    config_class, model_class, extra = TINY_EXTRA[arch]
    config = getattr(transformers, config_class)(**common, **extra)
    return getattr(transformers, model_class)(config)


def save_tiny_checkpoint(path: Path, arch: str = "llama", vocab_size: int = 320, **kw) -> Path:
    """Write a tiny random model + tokenizer as a Hugging Face folder at `path`."""
    path = Path(path)
    tokenizer = build_tokenizer(vocab_size=min(vocab_size, 320))
    model = build_model(arch, vocab_size=max(vocab_size, len(tokenizer)), **kw)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_parity_dataset(path: Path, n: int = 48, seed: int = 0) -> Path:
    """A learnable toy task: is the number odd? Completions are one word."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a = rng.randint(0, 99)
            f.write(json.dumps({"prompt": f"Is {a} odd?", "completion": "yes" if a % 2 else "no"}) + "\n")
    return path


def word_tokenizer_dir(tmp_path):
    """A folder with a word-level tokenizer.json (one token per space-separated word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path / "weights"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder
