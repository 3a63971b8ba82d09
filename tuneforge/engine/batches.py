"""Prompt/completion pairs -> token ids with the base model's chat template -> padded batches.

The prompt becomes the user turn and the completion the assistant turn. Only the assistant turn
(completion text plus the template's end-of-turn token) is trained on: prompt tokens get label -100.
Prompt and completion are tokenized separately at the turn boundary, as TRL does, so masking never
depends on finding a response template inside the token stream (a known source of silently
all-masked examples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    prompt_len: int  # input_ids[prompt_len:] is the completion, ending with the end-of-turn token

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def prompt_text(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False).input_ids


def completion_text(tokenizer, prompt: str, completion: str) -> str:
    """The assistant turn exactly as the chat template renders it, cut after its end-of-turn token."""
    head = prompt_text(tokenizer, prompt)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    eos = tokenizer.eos_token or ""
    if not full.startswith(head):  # a template that rewrites earlier turns: fall back to text + EOS
        return completion + eos
    tail = full[len(head) :]
    end = tail.rfind(eos) if eos else -1
    return tail[: end + len(eos)] if end >= 0 else tail + eos


def encode_example(tokenizer, prompt: str, completion: str) -> Encoded:
    head = encode_prompt(tokenizer, prompt)
    tail = tokenizer(completion_text(tokenizer, prompt, completion), add_special_tokens=False).input_ids
    return Encoded(head + tail, len(head))


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are the input ids at completion positions and IGNORE elsewhere."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, e.prompt_len : n] = ids[row, e.prompt_len : n]
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
