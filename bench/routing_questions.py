"""The routing benchmark's question set: generated deterministically, every answer checkable.

    .venv/bin/python bench/routing_questions.py   # writes bench/data/routing_questions.jsonl

Arithmetic (sums, differences, products, two-step), short facts (capitals, chemical symbols, everyday
facts) and word questions. ``split`` is ``calibration`` (used to train the router and calibrate the
confidence score) or ``test`` (only for the reported numbers).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).parent / "data" / "routing_questions.jsonl"
SEED = 20261126

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Mexico": "Mexico City",
    "India": "New Delhi",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Portugal": "Lisbon",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
    "Vietnam": "Hanoi",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "Czech Republic": "Prague",
    "Cuba": "Havana",
    "Colombia": "Bogota",
    "Nigeria": "Abuja",
    "Pakistan": "Islamabad",
    "Iran": "Tehran",
}
SYMBOLS = {
    "hydrogen": "H",
    "helium": "He",
    "carbon": "C",
    "nitrogen": "N",
    "oxygen": "O",
    "sodium": "Na",
    "iron": "Fe",
    "gold": "Au",
    "silver": "Ag",
    "copper": "Cu",
    "potassium": "K",
    "calcium": "Ca",
    "lead": "Pb",
    "tin": "Sn",
    "mercury": "Hg",
    "zinc": "Zn",
    "sulfur": "S",
    "chlorine": "Cl",
}
FACTS = [
    ("How many days are in a week?", "7"),
    ("How many legs does a spider have?", "8"),
    ("How many months are in a year?", "12"),
    ("How many hours are in a day?", "24"),
    ("How many minutes are in an hour?", "60"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a hexagon have?", "6"),
    ("How many continents are there on Earth?", "7"),
    ("How many legs does an insect have?", "6"),
    ("At what temperature in Celsius does water boil at sea level?", "100"),
    ("At what temperature in Celsius does water freeze?", "0"),
    ("How many planets are in the Solar System?", "8"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("What planet is known as the Red Planet?", "Mars"),
    ("What is the closest star to Earth?", "Sun"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What color do you get by mixing red and white?", "pink"),
    ("What is the freezing form of water called?", "ice"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What do bees make?", "honey"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the chemical formula of water?", "H2O"),
    ("What is the first month of the year?", "January"),
    ("What is the last month of the year?", "December"),
    ("What day comes after Monday?", "Tuesday"),
    ("What is the square root of 81?", "9"),
]
WORDS = ["apple", "banana", "cherry", "garden", "pencil", "window", "rocket", "turtle", "planet", "silver"]


def _arithmetic(rng: random.Random, n: int) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    for i in range(n):
        kind = i % 4
        a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 9)
        if kind == 0:
            q, ans = f"What is {a} + {b}?", a + b
        elif kind == 1:
            a, b = max(a, b), min(a, b)
            q, ans = f"What is {a} - {b}?", a - b
        elif kind == 2:
            q, ans = f"What is {a} * {c}?", a * c
        else:
            q, ans = f"What is {a} + {b} * {c}?", a + b * c
        items.append({"category": "arithmetic", "question": q, "answer": str(ans)})
    return items


def generate() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    items = _arithmetic(rng, 60)
    for country in rng.sample(sorted(CAPITALS), 30):
        items.append(
            {
                "category": "capital",
                "question": f"What is the capital of {country}?",
                "answer": CAPITALS[country],
            }
        )
    for element in rng.sample(sorted(SYMBOLS), 14):
        items.append(
            {
                "category": "symbol",
                "question": f"What is the chemical symbol of {element}?",
                "answer": SYMBOLS[element],
            }
        )
    items += [{"category": "fact", "question": q, "answer": a} for q, a in FACTS]
    for word in WORDS:
        items.append(
            {
                "category": "word",
                "question": f"What is the first letter of the word '{word}'?",
                "answer": word[0],
            }
        )
        items.append(
            {
                "category": "word",
                "question": f"How many letters are in the word '{word}'?",
                "answer": str(len(word)),
            }
        )
    rng.shuffle(items)
    for index, item in enumerate(items):
        item["id"] = f"q{index:03d}"
        item["split"] = "calibration" if index % 2 == 0 else "test"
    return items


def is_correct(answer: str, expected: str) -> bool:
    """Numbers: the first number in the answer; words: the expected word (or symbol) stands on its own."""
    text = answer.strip()
    if re.fullmatch(r"-?\d+", expected):
        numbers = re.findall(r"-?\d[\d,]*", text)
        return bool(numbers) and numbers[0].replace(",", "") == expected
    if len(expected) <= 2:  # a letter or a chemical symbol: case matters for symbols, not for letters
        pattern = rf"(?<![A-Za-z]){re.escape(expected)}(?![a-z])"
        flags = re.IGNORECASE if expected.isalpha() and len(expected) == 1 else 0
        return re.search(pattern, text, flags) is not None

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", s.lower().replace("í", "i").replace("á", "a"))

    return re.search(rf"\b{re.escape(norm(expected))}\b", norm(text)) is not None


def main() -> None:
    items = generate()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    print(f"wrote {len(items)} questions to {OUT}")


if __name__ == "__main__":
    main()
