"""A synthetic, deterministic corpus of prompts labelled for the router's two heads.

``complex``: 1 when a small model is unlikely to do it well (code, multi-step maths, analysis, long or
structured output), 0 for chit-chat, short facts, definitions and simple rewrites. ``think``: 1 when
step-by-step reasoning helps (maths, logic, debugging, planning), 0 otherwise. Templates × fillers,
sampled with a fixed seed, so the corpus (and the weights trained on it) are reproducible.
"""

from __future__ import annotations

import random

SIMPLE = [
    "Hi!",
    "Hello, how are you?",
    "Thanks a lot!",
    "Good morning",
    "What's up?",
    "Tell me a joke.",
    "What is the capital of {country}?",
    "Who wrote {book}?",
    "What does the word '{word}' mean?",
    "Give me a synonym for {adj}.",
    "What color is the sky?",
    "Spell '{word}' backwards.",
    "Is a tomato a fruit?",
    "What day comes after {day}?",
    "Name three {things}.",
    "Rewrite this more politely: '{rude}'",
    "Fix the typo: 'teh {word}'",
    "What is the plural of {word}?",
    "How do you say hello in Spanish?",
    "Summarise in one line: {short}",
    "What time zone is {country} in?",
    "Recommend a {genre} movie.",
    "Is {country} in Europe?",
    "Define {word} in one sentence.",
    "Give me a name for a {pet}.",
    "What rhymes with {word}?",
]
COMPLEX_NO_THINK = [
    "Write a Python function that {task}.",
    "Write a {lang} class that implements {structure} with tests.",
    "Write a 1500 word essay about {topic}.",
    "Write a detailed report on {topic} with sections and sources.",
    'Convert this data to JSON matching the schema {{"name": string, "items": [{{"id": int}}]}}: {short}',
    "Write a SQL query that {sqltask}.",
    "Draft a comprehensive project proposal for {topic}.",
    "Refactor this code for readability:\n```{lang}\n{code}\n```",
    "Write unit tests for:\n```\n{code}\n```",
    "Write a story of several pages about {topic}.",
    "Create a REST API in {lang} that {task}.",
]
COMPLEX_THINK = [
    "Solve step by step: a train leaves at {a} km/h and another at {b} km/h; when do they meet {c} km apart?",
    "Prove that the sum of two even numbers is even.",
    "Why does {phenomenon} happen? Explain the reasoning.",
    "Debug this code and explain why it fails:\n```{lang}\n{code}\n```",
    "Compute {a} * {b} - {c} / 4 and show each step.",
    "Compare {x} and {y}: trade-offs, pros and cons, and which to choose for {topic}.",
    "Design an algorithm that {task} in O(n log n) and analyse its complexity.",
    "If all {things} are {adj} and some {adj} things are red, can we deduce that some {things} are red?",
    "What is the probability of getting at least two heads in {a} coin flips?",
    "Plan a migration of {topic} from {x} to {y}, step by step, with risks.",
    "Solve the equation {a}x + {b} = {c} and check the solution.",
    "Find the derivative of x^{a} * sin(x).",
    "A shop sells {things} at {a} dollars; after a {b} percent discount and {c} percent tax, what is the price?",  # noqa: E501
]
FILL = {
    "country": ["France", "Japan", "Peru", "Kenya", "Norway", "Canada", "India"],
    "book": ["Hamlet", "Don Quixote", "War and Peace", "1984"],
    "word": ["serendipity", "ephemeral", "cat", "house", "bright", "quick"],
    "adj": ["happy", "big", "fast", "green", "round"],
    "day": ["Monday", "Friday", "Sunday"],
    "things": ["fruits", "planets", "birds", "tools", "cars"],
    "rude": ["give me that now", "you are wrong", "hurry up"],
    "short": ["The meeting moved to Tuesday at 3pm in room 4.", "Alice bought two apples and a pear."],
    "genre": ["comedy", "sci-fi", "horror"],
    "pet": ["cat", "dog", "parrot"],
    "task": [
        "parses CSV files and reports column statistics",
        "merges overlapping intervals",
        "finds the shortest path in a weighted graph",
        "rate-limits requests per user",
    ],
    "lang": ["Python", "Rust", "TypeScript", "Go", "Java"],
    "structure": ["an LRU cache", "a trie", "a priority queue", "a bloom filter"],
    "topic": ["climate policy", "microservices", "the history of Rome", "remote work", "a payments database"],
    "sqltask": ["finds the top customers per month", "deduplicates orders by email"],
    "code": [
        "def f(x):\n    return x[0] + f(x[1:])",
        "for i in range(len(a)): a.remove(a[i])",
        "let v = vec![1,2]; let r = &v; v.push(3);",
    ],
    "phenomenon": ["the sky look blue", "ice float on water", "inflation rise after stimulus"],
    "x": ["PostgreSQL", "Kafka", "REST", "monolith"],
    "y": ["MongoDB", "RabbitMQ", "gRPC", "microservices"],
    "a": ["3", "12", "45", "7"],
    "b": ["5", "30", "18", "9"],
    "c": ["100", "240", "60", "15"],
}


def _fill(template: str, rng: random.Random) -> str:
    out = template
    for key, values in FILL.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(values), 1)
    return out.replace("{{", "{").replace("}}", "}")


def corpus(seed: int = 7, per_template: int = 8) -> list[tuple[str, int, int]]:
    """``(prompt, complex, think)`` rows, deduplicated, in a fixed order."""
    rng = random.Random(seed)
    rows: dict[str, tuple[int, int]] = {}
    for templates, label in ((SIMPLE, (0, 0)), (COMPLEX_NO_THINK, (1, 0)), (COMPLEX_THINK, (1, 1))):
        for template in templates:
            for _ in range(per_template):
                rows.setdefault(_fill(template, rng), label)
    return [(prompt, c, t) for prompt, (c, t) in rows.items()]
