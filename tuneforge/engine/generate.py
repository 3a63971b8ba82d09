"""Load a fine-tuned model folder (or a bare base model), generate, and score against a dataset:
loss and token accuracy (as in training) plus exact match of greedy generations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.engine.batches import encode, encode_prompt, reply_prompt
from tuneforge.engine.peft_format import load_adapter
from tuneforge.engine.precision import pick_device, pick_dtype
from tuneforge.engine.train import evaluate
from tuneforge.engine.weights import Weights, load_model_and_tokenizer
from tuneforge.errors import TuneForgeError
from tuneforge.run_folder import RunFolder, RunResult


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    device: str
    description: str  # what is answering: base model, stand-in, adapter
    stand_in: bool


def load_base(weights: Weights, device: str = "auto", precision: str = "auto") -> Loaded:
    device = pick_device(device)
    model, tokenizer = load_model_and_tokenizer(weights, pick_dtype(precision, device), device)
    model.eval()
    return Loaded(model, tokenizer, device, weights.description, weights.stand_in)


def finished_run(model_dir: Path) -> RunResult:
    """The RunResult of a finished `tuneforge train` output folder, or a user error saying what it lacks."""
    folder = RunFolder(model_dir)
    result = folder.read_result() if folder.is_finished() else None
    if result is None:
        raise TuneForgeError(f"--model {model_dir}: not a finished TuneForge model folder (needs model.json and adapter/)")
    return result


def trained_base_weights(model_dir: Path) -> Weights:
    """The base weights a `tuneforge train` output folder was trained on (from its model.json)."""
    result = finished_run(model_dir)
    w = result.weights
    weights = Weights(w["source"], Path(w["path"]), result.stand_in, w["description"])
    if not (weights.path / "config.json").is_file():
        raise TuneForgeError(f"--model {model_dir}: its base weights {weights.path} are no longer there")
    return weights


def load_trained(model_dir: Path, device: str = "auto", precision: str = "auto") -> Loaded:
    """A `tuneforge train` output folder: its base weights plus its adapter."""
    result = finished_run(model_dir)
    weights = trained_base_weights(model_dir)
    loaded = load_base(weights, device, precision)
    load_adapter(loaded.model, RunFolder(model_dir).adapter_dir)
    loaded.model.to(loaded.device)
    loaded.model.eval()
    loaded.description = f"{result.base_model_id} fine-tuned ({result.method}) on {weights.description}"
    return loaded


@torch.no_grad()
def generate(
    loaded: Loaded,
    prompts: list[str] | list[list[int]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """Greedy when temperature is 0, else nucleus sampling. Left-padded batches. Each prompt is a user
    turn's text, or token ids already rendered with the chat template (`reply_prompt`)."""
    tok, model = loaded.tokenizer, loaded.model
    pad = tok.pad_token_id
    torch.manual_seed(seed)
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [p if isinstance(p, list) else encode_prompt(tok, p) for p in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=loaded.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=loaded.device)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=pad,
            **sampling,
        )
        outputs += [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return outputs


def score(loaded: Loaded, examples, *, max_new_tokens: int | None = None) -> dict:
    """Loss and token accuracy over the trained tokens; exact match of greedy generations (for a
    conversation: of its last trained assistant turn, generated from the messages before it)."""
    encoded = [encode(loaded.tokenizer, e) for e in examples]
    loss, accuracy = evaluate(loaded.model, encoded, loaded.tokenizer.pad_token_id, loaded.device)
    longest = max(e.completion_len for e in encoded)
    asked = [reply_prompt(loaded.tokenizer, e) for e in examples]
    generations = generate(loaded, [ids for ids, _, _ in asked], max_new_tokens=max_new_tokens or longest + 8)
    matches = [g == expected.strip() for g, (_, _, expected) in zip(generations, asked)]
    return {
        "examples": len(examples),
        "loss": loss,
        "accuracy": accuracy,
        "exactMatch": sum(matches) / len(matches),
        "samples": [
            {"line": e.line, "prompt": shown, "expected": expected, "generated": g, "match": m}
            for e, (_, shown, expected), g, m in list(zip(examples, asked, generations, matches))[:5]
        ],
    }
