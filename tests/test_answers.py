"""Answer extraction and comparison (opdlm_jax.eval.answers) and result records (eval.records)."""
import json
import math

import pytest

from opdlm_jax.eval.answers import (exact_match, extract_boxed, extract_choice, extract_math_answer,
                                    gsm8k_gold, last_number, math_equal, mean_and_std,
                                    normalize_math, parse_number, score_choice, score_math)
from opdlm_jax.eval.records import (DecodingSettings, EvalResult, ExampleRecord, read_records,
                                    write_records)

BOXED = [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
    (r"$\boxed{\left\{ x \mid x^{2} > 1 \right\}}$", r"\left\{ x \mid x^{2} > 1 \right\}"),
    (r"first \boxed{3}, corrected: \boxed{4}", "4"),  # the last box wins
    (r"\fbox{7} is it", "7"),
    (r"\boxed{1} then \fbox{2}", "2"),
    (r"\boxed 5$ done", "5"),  # brace-less form
    (r"\boxed{3} and then \boxed{\frac{4", None),  # a truncated last box is no answer
    ("no box here, 12", None),
    (r"\boxed{}", ""),
]

CHOICE = [
    ('{"answer": "C"}', "C"),  # the reference's JSON form
    ("Reasoning... \"answer\": \"B\"", "B"),
    ("'answer': 'd'", "D"),  # single quotes, lower case
    ('"Answer" : "(A)"', "A"),
    ('"answer": "B" first, final "answer": "C"', "C"),  # last wins
    ('"answer": "C" ... Answer: D', "C"),  # JSON form takes precedence over fallbacks
    (r"so \boxed{B}", "B"),
    ("Answer: C", "C"),  # fallbacks
    ("The answer is (D).", "D"),
    ("answer is B because", "B"),
    ("Answer: Clearly none of them", None),  # a word, not a letter
    ("I would pick (B) rather than (A)", "A"),
    ("The correct option is J.", None),  # a bare letter is not accepted
    ('"answer": "K"', None),  # outside the default A-J
]

NUMBERS = [
    ("The answer is 42.", "42"),
    ("x = -3.5 or maybe 7", "7"),
    ("it went down to -12", "-12"),
    ("total 1,234,567 dollars", "1234567"),
    ("a ratio of 3/4, apparently", "3/4"),
    ("about .5 of it", "0.5"),
    ("3-5", "5"),  # a binary minus is not a sign
    ("pay $1,000.50.", "1000.50"),
    ("lists 1,2,3", "3"),
    ("no numbers at all", None),
]

EQUAL = [
    ("0.5", r"\frac{1}{2}"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"\tfrac12", "1/2"),
    ("2/4", "1/2"),
    ("-1/2", r"-\frac{1}{2}"),
    ("1,000", "1000"),
    ("3.50", "3.5"),
    ("2.0", "2"),
    ("$5$", "5"),
    (r"5\text{ cm}", "5"),
    (r"\text{Monday}", "Monday"),
    ("x = 7", "7"),
    ("k=12", "12"),
    ("  1 2 3 ", "123"),
    (r"\left( 1, 2 \right)", "(1,2.0)"),
    (r"90^\circ", "90"),
    (r"50\%", "50"),
    (r"\$18", "18"),
    (r"\boxed{10}", "10"),
    (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt{3}}{2}"),
]

NOT_EQUAL = [
    ("0.333", "1/3"),  # a rounded decimal is not the fraction
    ("3.5", "35"),
    ("1/2", "2"),
    ("-2", "2"),
    ("12", "1,2"),
    ("(1,2)", "(2,1)"),
    (None, "5"),
    ("", "0"),
    ("x+1", "x+2"),
]


@pytest.mark.parametrize("text,expected", BOXED)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text,expected", CHOICE)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize("text,expected", NUMBERS)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("pred,gold", EQUAL)
def test_math_equal(pred, gold):
    assert math_equal(pred, gold)
    assert math_equal(gold, pred)


@pytest.mark.parametrize("pred,gold", NOT_EQUAL)
def test_math_not_equal(pred, gold):
    assert not math_equal(pred, gold)


@pytest.mark.parametrize("raw,canonical", [
    (r"$\dfrac{3}{4}$", "3/4"), ("x = 1,000", "1000"), ("3.50", "3.5"), ("2.0", "2"), ("-.5", "-0.5"),
    (r"5\text{ cm}", "5"), (r"\left( 1, 2 \right)", "(1,2)"), ("7.", "7"),
])
def test_normalize_math(raw, canonical):
    assert normalize_math(raw) == canonical


def test_helpers():
    assert parse_number("-3.50") == parse_number("-7/2")
    assert parse_number("1/0") is None and parse_number("abc") is None
    assert gsm8k_gold("so 3 + 4 = 7\n#### 1,007") == "1007"
    assert extract_math_answer(r"... \boxed{\frac{2}{3}}") == r"\frac{2}{3}"
    assert extract_math_answer("so the total is 18 apples.") == "18"
    assert score_math(r"Thus \boxed{0.50}.", "1/2") and not score_math("nothing", "1")
    assert score_choice('{"answer": "B"}', "(B)") and not score_choice("Answer: A", "B")
    assert exact_match("  Hello   World", "hello world") and not exact_match("hello", None)
    assert not exact_match("Hello", "hello", ignore_case=False)


def test_mean_and_std():
    assert mean_and_std([0.5]) == (0.5, 0.0)
    mean, std = mean_and_std([0.1, 0.2, 0.3])
    assert math.isclose(mean, 0.2) and math.isclose(std, 0.1)
    assert math.isclose(mean_and_std([0.1, 0.3], ddof=0)[1], 0.1)
    with pytest.raises(ValueError):
        mean_and_std([])


def test_records_roundtrip_and_summary(tmp_path):
    base = DecodingSettings(strategy="low_confidence_dynamic", threshold=0.9, block_size=4, steps_per_block=4,
                            alignment="same_position", temperature=0.0, max_new_tokens=32)
    records = []
    for seed, correct in ((0, [True, False]), (1, [True, True])):
        settings = DecodingSettings(**{**base.to_dict(), "seed": seed})
        for i, ok in enumerate(correct):
            records.append(ExampleRecord(task="gsm8k", example_id=i, settings=settings, completion="x",
                                         extracted="1", gold="1" if ok else "2", correct=ok, num_tokens=8,
                                         rounds=4, batch_index=0, nfe=5, seconds=0.5))
    path = tmp_path / "records.jsonl"
    assert write_records(path, records[:2], append=False) == 2
    write_records(path, records[2:])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:  # the decoding settings are logged with every result
        for field in ("strategy", "threshold", "block_size", "seed", "alignment", "temperature"):
            assert field in line
    back = read_records(path)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    result = EvalResult.from_records(back)
    assert result.seeds == [0, 1] and result.num_examples == 2
    assert result.per_seed_accuracy == {0: 0.5, 1: 1.0}
    assert math.isclose(result.accuracy_mean, 0.75) and math.isclose(result.accuracy_std, math.sqrt(0.125))
    assert result.tokens_per_round == 2.0 and result.nfe == 10 and result.nfe_per_call == 5
    assert math.isclose(result.tokens_per_second, 32 / 1.0)
    assert "seed" not in result.settings and result.settings["strategy"] == "low_confidence_dynamic"
    assert "acc 75.0" in result.summary_line()
    mixed = records + [ExampleRecord(task="gsm8k", example_id=0, correct=True,
                                     settings=DecodingSettings(**{**base.to_dict(), "threshold": 0.8}))]
    with pytest.raises(ValueError, match="mix decoding settings"):
        EvalResult.from_records(mixed)
