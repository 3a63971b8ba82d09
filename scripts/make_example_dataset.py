"""Make the bundled example dataset: dates written every which way -> ISO 8601 (YYYY-MM-DD).

The base stand-in model answers these with extra words, times or the wrong order; a short LoRA
fine-tune teaches it the exact format. Deterministic: rerunning writes the same file.

    python scripts/make_example_dataset.py  # writes tuneforge/examples/dates.jsonl
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

N_EXAMPLES = 240
OUT = Path(__file__).resolve().parents[1] / "tuneforge" / "examples" / "dates.jsonl"


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each format renders one date unambiguously (numeric forms say which order they use).
FORMATS = [
    lambda d: f"{d:%B} {d.day}, {d.year}",
    lambda d: f"{d.day} {d:%B} {d.year}",
    lambda d: f"{d:%b} {d.day} {d.year}",
    lambda d: f"{d:%A}, {d:%B} {ordinal(d.day)}, {d.year}",
    lambda d: f"the {ordinal(d.day)} of {d:%B}, {d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year} (day.month.year)",
    lambda d: f"{d.month}/{d.day}/{d.year} (US month/day/year)",
    lambda d: f"{d.day}/{d.month}/{d.year} (day/month/year)",
    lambda d: f"{d:%B} {ordinal(d.day)} {d.year}",
    lambda d: f"{d.year}, {d:%B} {d.day}",
]
PROMPTS = [
    "Convert this date to ISO 8601 (YYYY-MM-DD). Reply with the date only: {}",
    "Normalize the date to ISO 8601, answer with YYYY-MM-DD only: {}",
    "ISO 8601 date (YYYY-MM-DD only) for: {}",
]


def main() -> None:
    rng = random.Random(8601)
    start, span = dt.date(1950, 1, 1), (dt.date(2049, 12, 31) - dt.date(1950, 1, 1)).days
    lines = []
    for i in range(N_EXAMPLES):
        day = start + dt.timedelta(days=rng.randrange(span))
        text = FORMATS[i % len(FORMATS)](day)
        prompt = PROMPTS[rng.randrange(len(PROMPTS))].format(text)
        lines.append(json.dumps({"prompt": prompt, "completion": day.isoformat()}))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} examples to {OUT}")


if __name__ == "__main__":
    main()
