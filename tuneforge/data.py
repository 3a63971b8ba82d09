"""Fine-tuning datasets: OCI's JSONL rules (oci-api.md §5.2), the 80:20 split, token-length checks.

Stdlib only at module level: `tuneforge plan` imports this and must answer in well under a second.

Rules, beyond OCI's text where it was silent:
- The file is read line by line in binary, so a 1 GB file never sits in memory, and line numbers
  are physical `\\n`-separated lines as an editor shows them.
- Blank or whitespace-only lines are skipped (a trailing newline or an empty last line is common).
- A UTF-8 byte-order mark at the start of the file is tolerated (Windows editors write one).
- Each other line must be a JSON object whose "prompt" and "completion" are non-empty strings
  (whitespace-only counts as empty: a model cannot learn from nothing, and OCI asks for
  "a prompt"). Other keys are ignored, so files exported with ids or metadata still load.
- Every problem in the file is reported at once (up to a cap), each with its line number.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tuneforge.errors import DatasetError, LineProblem

MIN_EXAMPLES = 32  # OCI: "at least 32 prompt/completion pairs"
DEFAULT_SEED = 42  # for the split and training unless --seed is given
FIELDS = ("prompt", "completion")

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    line: int  # 1-based line in the file


class _Problems:
    """Collects problems up to a cap and counts the rest."""

    def __init__(self, path: str | os.PathLike, cap: int):
        self.path, self.cap, self.shown, self.total = str(path), cap, [], 0

    def add(self, line: int | None, message: str) -> None:
        self.total += 1
        if len(self.shown) < self.cap:
            self.shown.append(LineProblem(line, message))

    def add_first(self, message: str) -> None:
        """A file-level problem, shown ahead of the line problems so the cap never hides it."""
        self.total += 1
        self.shown.insert(0, LineProblem(None, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise DatasetError(self.path, self.shown, self.total)


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _parse_line(raw: bytes, lineno: int, problems: _Problems) -> Example | None:
    """One line's Example, or None after recording what is wrong with it (or if it is blank)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.add(lineno, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)")
        return None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except RecursionError:
        problems.add(lineno, "not valid JSON (nested too deeply)")
        return None
    except json.JSONDecodeError as e:
        problems.add(lineno, f"not valid JSON ({e.msg} at column {e.colno})")
        return None
    except ValueError:  # Python refuses integer literals of more than 4300 digits
        problems.add(lineno, "not valid JSON (a number with too many digits)")
        return None
    if not isinstance(obj, dict):
        problems.add(lineno, f'not a JSON object (got {_json_type(obj)}); expected {{"prompt": ..., "completion": ...}}')
        return None
    ok = True
    for key in FIELDS:
        if key not in obj:
            problems.add(lineno, f'missing "{key}"')
            ok = False
            continue
        value = obj[key]
        if not isinstance(value, str):
            problems.add(lineno, f'"{key}" must be a string, got {_json_type(value)}')
            ok = False
        elif not value.strip():
            problems.add(lineno, f'"{key}" is empty' + (" (only whitespace)" if value else ""))
            ok = False
        elif not _is_encodable(value):
            # A lone \ud800-style escape decodes to a str that no tokenizer can encode.
            problems.add(lineno, f'"{key}" contains an unpaired surrogate escape (\\ud800-\\udfff), which is not text')
            ok = False
    return Example(obj["prompt"], obj["completion"], lineno) if ok else None


def _is_encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_examples(path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES) -> Iterator[Example]:
    """Stream the valid examples of a dataset file; after the last one, raise DatasetError if the
    file had any problem or fewer than `min_examples` examples (OCI's 32 for training data; an
    evaluation file needs only one). Consume it fully before trusting it."""
    problems = _Problems(path, max_problems)
    try:
        f = open(path, "rb")  # noqa: SIM115 (opened apart from the `with` so each open error gets its own message)
    except FileNotFoundError:
        raise DatasetError(str(path), [LineProblem(None, "file not found")]) from None
    except IsADirectoryError:
        raise DatasetError(str(path), [LineProblem(None, "is a directory, not a JSONL file")]) from None
    except OSError as e:
        raise DatasetError(str(path), [LineProblem(None, f"cannot be read ({e.strerror})")]) from None
    count = 0
    with f:
        try:
            for lineno, raw in enumerate(f, start=1):
                example = _parse_line(raw, lineno, problems)
                if example is not None:
                    count += 1
                    yield example
        except OSError as e:  # e.g. a directory on platforms where open() succeeds, or an I/O error
            raise DatasetError(str(path), [LineProblem(None, f"cannot be read ({e.strerror or e})")]) from None
    if count < min_examples:
        needed = f"at least {min_examples} are needed" if min_examples > 1 else "at least one is needed"
        problems.add_first(f"{count} valid example{'' if count == 1 else 's'}; {needed}")
    problems.raise_if_any()


def scan_dataset(path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES) -> int:
    """Validate the whole file without keeping it in memory; the number of examples."""
    return sum(1 for _ in iter_examples(path, max_problems=max_problems, min_examples=min_examples))


def read_examples(path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES) -> list[Example]:
    """Validate the whole file; all its examples, in file order."""
    return list(iter_examples(path, max_problems=max_problems, min_examples=min_examples))


def split_sizes(n: int) -> tuple[int, int]:
    """(n_train, n_val) for OCI's 80:20 split: n_val = floor(n / 5 + 0.5), 20 % rounded half up.

    Integer arithmetic so no float rounding can move an example: floor((2n + 5) / 10).
    With n >= 32 both sides are non-empty (n = 32 gives 26 + 6)."""
    n_val = (2 * n + 5) // 10
    return n - n_val, n_val


def split_indices(n: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices into the dataset, each ascending. random.Random(seed) with an int seed
    does not depend on PYTHONHASHSEED, so the same seed gives the same split in every process."""
    _n_train, n_val = split_sizes(n)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_examples(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    train, val = split_indices(len(examples), seed)
    return [examples[i] for i in train], [examples[i] for i in val]


def check_token_lengths(
    examples: Iterable[Example],
    count_tokens: Callable[[str], int],
    *,
    max_prompt_tokens: int | None,
    max_completion_tokens: int | None,
    context_tokens: int | None,
    max_problems: int = 50,
    path: str | os.PathLike = "(dataset)",
    context_source: str | None = None,
) -> None:
    """Raise DatasetError naming each example (by line) whose prompt, completion or the two together
    exceed the model's limits (None = no limit). Counts are the tokenizer's, without special tokens.
    `context_source` says where the context limit comes from when it is not the catalog's own."""
    problems = _Problems(path, max_problems)
    for ex in examples:
        p, c = count_tokens(ex.prompt), count_tokens(ex.completion)
        if max_prompt_tokens is not None and p > max_prompt_tokens:
            problems.add(ex.line, f"prompt is {p:,} tokens; this model allows at most {max_prompt_tokens:,}")
        if max_completion_tokens is not None and c > max_completion_tokens:
            problems.add(ex.line, f"completion is {c:,} tokens; this model allows at most {max_completion_tokens:,}")
        if context_tokens is not None and p + c > context_tokens:
            why = f" ({context_source})" if context_source else ""
            problems.add(ex.line, f"prompt + completion is {p + c:,} tokens; this model's context is {context_tokens:,}{why}")
    problems.raise_if_any()
