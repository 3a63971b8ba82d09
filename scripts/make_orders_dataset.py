"""Make the second example dataset: shop orders written as free text -> one JSON object per order.

The sweep's held-out task (docs/sweeps.md): nothing of the sweep's defaults was chosen on it. The
base stand-in model answers with prose, other key names or Markdown fences; a fine-tune has to
teach it the exact keys, their order, integer quantities and the singular item name. Deterministic:
rerunning writes the same file.

    python scripts/make_orders_dataset.py  # writes tuneforge/examples/orders.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

N_EXAMPLES = 240
OUT = Path(__file__).resolve().parents[1] / "tuneforge" / "examples" / "orders.jsonl"

FIRST = [
    "Alice",
    "Bruno",
    "Chen",
    "Dara",
    "Elif",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Keiko",
    "Luca",
    "Mira",
    "Noah",
    "Olga",
    "Pavel",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yara",
    "Zoe",
]
LAST = ["Moreno", "Okafor", "Lindqvist", "Haddad", "Novak", "Tanaka", "Dubois", "Kowalski", "Silva", "Fischer", "Rossi", "Nguyen"]
ITEMS = [
    ("blue mug", "blue mugs"),
    ("desk lamp", "desk lamps"),
    ("notebook", "notebooks"),
    ("phone case", "phone cases"),
    ("tea tin", "tea tins"),
    ("wool scarf", "wool scarves"),
    ("water bottle", "water bottles"),
    ("pencil set", "pencil sets"),
    ("yoga mat", "yoga mats"),
    ("candle", "candles"),
]
CITIES = ["Lyon", "Osaka", "Porto", "Leeds", "Graz", "Quito", "Perth", "Tartu", "Bergen", "Cusco", "Malmo", "Lagos"]
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

TEMPLATES = [
    "Order #{id}: {name} bought {qty} {item}, ship to {city}.",
    "{name} ({city}) ordered {qty} {item} - reference {id}.",
    "New order {id} from {name}. Items: {item} x{qty}. Destination: {city}",
    "Please send {qty} {item} to {name} in {city}. Order number {id}.",
    "ref {id} | customer {name} | {qty} x {item} | deliver to {city}",
    "{name} wants {qty} {item} delivered to {city} (order {id}).",
]
PROMPTS = [
    "Extract the order as JSON with keys id, name, qty, item, city. Reply with the JSON only: {}",
    "Turn this order into a JSON object (id, name, qty, item, city), nothing else: {}",
]


def main() -> None:
    rng = random.Random(2024)
    lines = []
    for i in range(N_EXAMPLES):
        order_id = rng.randrange(1000, 9999)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        singular, plural = rng.choice(ITEMS)
        qty = rng.randint(1, 6)
        city = rng.choice(CITIES)
        quantity = NUMBERS[qty] if i % 3 == 0 else str(qty)  # "three blue mugs" as well as "3 blue mugs"
        text = TEMPLATES[i % len(TEMPLATES)].format(
            id=order_id, name=name, qty=quantity, item=singular if qty == 1 else plural, city=city
        )
        record = {"id": order_id, "name": name, "qty": qty, "item": singular, "city": city}
        lines.append(json.dumps({"prompt": rng.choice(PROMPTS).format(text), "completion": json.dumps(record)}))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} examples to {OUT}")


if __name__ == "__main__":
    main()
