"""Make the bundled preference task (DPO, docs/dpo.md): the dates of dates.jsonl, asked for as ISO 8601
"only", with a preferred reply (the bare YYYY-MM-DD) and a non-preferred one (the same date, right, but
chatty or in another format). Two files:

- dates_preferences.jsonl: the pairs, in OpenAI's DPO format (input / preferred_output / non_preferred_output);
- dates_demos.jsonl: the same prompts as supervised prompt/completion lines whose completion is the
  preferred or the non-preferred reply by a seeded coin: demonstrations of mixed quality, as data collected
  from several writers is. Supervised fine-tuning on them learns the task and both styles alike, so the
  preference error stays near chance; DPO on the pairs removes it.

Deterministic: rerunning writes the same files.

    python scripts/make_preference_dataset.py  # writes tuneforge/examples/dates_preferences.jsonl and dates_demos.jsonl
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

N_PAIRS = 240
EXAMPLES = Path(__file__).resolve().parents[1] / "tuneforge" / "examples"
FORMATS = [
    lambda d: f"{d:%B} {d.day}, {d.year}",
    lambda d: f"{d.day} {d:%B} {d.year}",
    lambda d: f"{d:%b} {d.day} {d.year}",
    lambda d: f"{d:%A}, {d:%B} {d.day}, {d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year} (day.month.year)",
    lambda d: f"{d.month}/{d.day}/{d.year} (US month/day/year)",
]
PROMPTS = [
    "Convert this date to ISO 8601 (YYYY-MM-DD). Reply with the date only: {}",
    "Normalize the date to ISO 8601, answer with YYYY-MM-DD only: {}",
    "ISO 8601 date (YYYY-MM-DD only) for: {}",
]
# Right dates, not what was asked for: the kinds of reply a preference rater marks down.
REJECTED = [
    lambda d: f"Sure! The date is {d.isoformat()}.",
    lambda d: f"{d.isoformat()} (that is, {d:%B} {d.day}, {d.year})",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    lambda d: f"The ISO 8601 form is {d.isoformat()}.",
]


def main() -> None:
    rng = random.Random(2023)  # Rafailov et al. 2023
    start, span = dt.date(1950, 1, 1), (dt.date(2049, 12, 31) - dt.date(1950, 1, 1)).days
    pairs, demos = [], []
    for i in range(N_PAIRS):
        day = start + dt.timedelta(days=rng.randrange(span))
        prompt = PROMPTS[rng.randrange(len(PROMPTS))].format(FORMATS[i % len(FORMATS)](day))
        chosen, rejected = day.isoformat(), REJECTED[rng.randrange(len(REJECTED))](day)
        pairs.append(
            {
                "input": {"messages": [{"role": "user", "content": prompt}]},
                "preferred_output": [{"role": "assistant", "content": chosen}],
                "non_preferred_output": [{"role": "assistant", "content": rejected}],
            }
        )
        demos.append({"prompt": prompt, "completion": chosen if rng.random() < 0.5 else rejected})
    for name, lines in (("dates_preferences.jsonl", pairs), ("dates_demos.jsonl", demos)):
        (EXAMPLES / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
        print(f"wrote {len(lines)} lines to {EXAMPLES / name}")


if __name__ == "__main__":
    main()
