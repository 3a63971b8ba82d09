"""A training dataset checked at create time exactly as the engine will check it: every bad line
named, and, when the base weights' tokenizer is already on disk, every example too long for the
model named too, so a bad dataset is refused at once instead of failing a minute into the job.

Either format is taken (data.py: prompt/completion, or chat lines as a TuneForge extension of OCI's
API, docs/datasets.md; preference pairs for a DPO fine-tune, docs/dpo.md), by every door that calls `check`: OCI's CreateModel, the console, sweeps and
OpenAI's fine-tuning jobs. A conversation's length here is its messages' own tokens (a lower bound:
rendering needs the chat template, which the job has; it checks the rendered length).

Token counts come from the weights' `tokenizer.json` through the `tokenizers` library (no torch),
which gives the ids the engine's fast tokenizer gives. Where the tokenizer is not on disk yet (a
GGUF file, the stand-in included, before the first run dequantizes it) only the lines are checked
here and the engine checks the lengths when the job starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge import data
from tuneforge.catalog import BaseModelSpec
from tuneforge.errors import DatasetError, WeightsError

# Above this size the lengths are left to the job: tokenizing hundreds of megabytes would hold the
# create request for tens of seconds.
MAX_CHECKED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TokenLimits:
    count: object  # str -> int
    context_tokens: int
    context_note: str | None


def token_limits(weights: str | None, spec: BaseModelSpec) -> TokenLimits | None:
    """How the job will count tokens and the context it will allow, if that is knowable now."""
    from tuneforge.engine.weights import resolve_weights

    try:
        resolved = resolve_weights(weights, model_id=spec.id, weights_repo=spec.weights_repo, convert=False)
    except (WeightsError, OSError):
        return None
    tokenizer_file = resolved.path / "tokenizer.json"
    if not tokenizer_file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    try:
        positions = int(
            json.loads((resolved.path / "config.json").read_text()).get("max_position_embeddings") or spec.context_tokens
        )
    except (OSError, ValueError):
        positions = spec.context_tokens
    return TokenLimits(
        count=lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
        context_tokens=min(spec.context_tokens, positions),
        context_note=resolved.context_note(positions, spec.context_tokens),
    )


def check(path: Path, name: str, spec: BaseModelSpec, weights: str | None, method: str = data.SUPERVISED) -> int:
    """The number of examples in the stored file `path`; DatasetError (described as `name`, never
    by the server's path) naming every problem. `method` (data.SUPERVISED or data.DPO) refuses a file
    of the other family, as the job would."""
    limits = token_limits(weights, spec) if path.stat().st_size <= MAX_CHECKED_BYTES else None
    try:
        if limits is None:
            return data.scan_dataset(path, method=method)
        examples = data.read_examples(path, method=method)
        data.check_token_lengths(
            examples,
            limits.count,
            max_prompt_tokens=spec.max_prompt_tokens,
            max_completion_tokens=spec.max_completion_tokens,
            context_tokens=limits.context_tokens,
            path=name,
            context_source=limits.context_note,
        )
        return len(examples)
    except DatasetError as err:
        raise DatasetError(name, err.problems, err.total) from None
