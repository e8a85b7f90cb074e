"""The routing benchmark's question set: generated deterministically, every answer checkable.

    .venv/bin/python bench/routing_questions.py   # writes bench/data/routing_questions.jsonl

300 questions, in about the shares of the first 154-question set: 120 arithmetic (sums, differences,
products by a digit, ``a + b * c``; one-, two- and three-digit operands in turn), 60 capitals, 28 chemical
symbols, 56 everyday facts and 36 word questions. ``split`` is ``calibration`` (used to train the router
and calibrate the confidence score) or ``test`` (only for the reported numbers).
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
    "Romania": "Bucharest",
    "Bulgaria": "Sofia",
    "Croatia": "Zagreb",
    "Serbia": "Belgrade",
    "Iceland": "Reykjavik",
    "Estonia": "Tallinn",
    "Latvia": "Riga",
    "Lithuania": "Vilnius",
    "Slovakia": "Bratislava",
    "Morocco": "Rabat",
    "Ethiopia": "Addis Ababa",
    "Ghana": "Accra",
    "Senegal": "Dakar",
    "Uganda": "Kampala",
    "Indonesia": "Jakarta",
    "Philippines": "Manila",
    "Malaysia": "Kuala Lumpur",
    "Saudi Arabia": "Riyadh",
    "Iraq": "Baghdad",
    "Afghanistan": "Kabul",
    "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu",
    "Venezuela": "Caracas",
    "Ecuador": "Quito",
    "Uruguay": "Montevideo",
    "New Zealand": "Wellington",
    "United Kingdom": "London",
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
    "fluorine": "F",
    "neon": "Ne",
    "magnesium": "Mg",
    "silicon": "Si",
    "phosphorus": "P",
    "argon": "Ar",
    "nickel": "Ni",
    "platinum": "Pt",
    "lithium": "Li",
    "cobalt": "Co",
    "manganese": "Mn",
    "chromium": "Cr",
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
    ("How many days are in a leap year?", "366"),
    ("How many seconds are in a minute?", "60"),
    ("How many sides does a square have?", "4"),
    ("How many sides does a pentagon have?", "5"),
    ("How many sides does an octagon have?", "8"),
    ("How many legs does a dog have?", "4"),
    ("How many wheels does a bicycle have?", "2"),
    ("How many weeks are in a year?", "52"),
    ("How many colors are in a rainbow?", "7"),
    ("What is the smallest prime number?", "2"),
    ("At what temperature in Fahrenheit does water boil at sea level?", "212"),
    ("At what temperature in Fahrenheit does water freeze?", "32"),
    ("What is the square root of 64?", "8"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the hardest natural substance?", "diamond"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the currency of Japan?", "yen"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What is the opposite of day?", "night"),
    ("What is the opposite of big?", "small"),
    ("What color is a ripe banana?", "yellow"),
    ("What color do you get by mixing red and yellow?", "orange"),
    ("What is the second month of the year?", "February"),
    ("What day comes after Friday?", "Saturday"),
]
WORDS = [
    "apple",
    "banana",
    "cherry",
    "garden",
    "pencil",
    "window",
    "rocket",
    "turtle",
    "planet",
    "silver",
    "orange",
    "bridge",
    "monkey",
    "castle",
    "dragon",
    "guitar",
    "jungle",
    "marble",
]
DIGITS = ((2, 9), (12, 99), (100, 999))  # one-, two- and three-digit operands, in turn


def _arithmetic(rng: random.Random, n: int) -> list[dict[str, str]]:
    """Sums, differences, products by a digit and ``a + b * c``, in turn; operands of one, two and three
    digits in turn within each kind (real traffic has all sizes)."""
    items: list[dict[str, str]] = []
    seen: set[str] = set()
    for i in range(n):
        kind = i % 4
        low, high = DIGITS[(i // 4) % len(DIGITS)]
        q = ""
        while not q or q in seen:  # no repeats (a repeat could land in both splits)
            a, b, c = rng.randint(low, high), rng.randint(low, high), rng.randint(2, 9)
            if kind == 0:
                q, ans = f"What is {a} + {b}?", a + b
            elif kind == 1:
                a, b = max(a, b), min(a, b)
                q, ans = f"What is {a} - {b}?", a - b
            elif kind == 2:
                q, ans = f"What is {a} * {c}?", a * c
            else:
                q, ans = f"What is {a} + {b} * {c}?", a + b * c
        seen.add(q)
        items.append({"category": "arithmetic", "question": q, "answer": str(ans)})
    return items


def generate() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    items = _arithmetic(rng, 120)
    for country in rng.sample(sorted(CAPITALS), 60):
        items.append(
            {
                "category": "capital",
                "question": f"What is the capital of {country}?",
                "answer": CAPITALS[country],
            }
        )
    for element in rng.sample(sorted(SYMBOLS), 28):
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
