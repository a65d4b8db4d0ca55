"""The benchmark scorers (opdlm_jax.eval.scorers): one table of completions and verdicts for math
(math-verify, as the authors call it), multiple choice (the authors' letter rules) and code (the
authors' four test formats plus HumanEval / MBPP / LiveCodeBench rows, run in the sandbox)."""
import json
from pathlib import Path

import pytest

from opdlm_jax.eval import sandbox
from opdlm_jax.eval.benchmarks import load_rows, resolve
from opdlm_jax.eval.scorers import extract_letter, score

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opdlm_eval"
LIMITS = sandbox.Limits(timeout_s=3)

# (completion, gold, correct)
MATH = [
    ("so the answer is \\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("The answer is \\boxed{1,200}", "1200", True),
    ("\\boxed{1200}", "1,200", True),
    ("\\boxed{\\boxed{7}}", "7", True),  # nested boxes
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),  # symbolic equality
    ("\\boxed{\\text{Monday}}", "\\text{Monday}", True),  # text answers
    ("The day is \\boxed{Monday}", "Monday", True),
    ("\\boxed{(1, 2)}", "(1,2)", True),
    ("so x = 5", "5", True),  # no box: the expression extractor
    ("The answer is 42.", "42", True),
    ("I do not know", "3", False),  # nothing extracted
    ("\\boxed{50\\%}", "50", True),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("\\boxed{10}", "12", False),
    ("\\boxed{\\dfrac{3}{4}}", "0.75", True),
    ("\\boxed{3}", "-3", False),
    # math-verify reads every box of the answer: two boxes are the tuple (3, 5), not 5
    ("First \\boxed{3}, then \\boxed{5}", "5", False),
    ("\\boxed{\\frac{1}{3}}", "0.333", False),
    ("\\boxed{5 \\text{ cm}}", "5", True),
    ("\\boxed{\\pi}", "3.14159", False),
]

# (completion, gold, letters, correct)
CHOICE = [
    ('{"answer": "C"}', "C", "ABCD", True),
    ("\\boxed{B}", "B", "ABCD", True),
    ("\\boxed{\\text{D}}", "D", "ABCD", True),
    ("Answer: (A)", "A", "ABCD", True),
    ("The correct answer is option b.", "B", "ABCD", True),
    ("**Answer:** 'C'", "C", "ABCD", True),
    ("I think it's D", "D", "ABCD", True),  # the bare-letter fallback; "I" is not an option
    ("I think so", "A", "ABCD", False),
    ("Answer: E", "E", "ABCD", False),  # E is not an option of a 4-way question
    ("(C)", "(C)", "ABCD", True),
    ("A or B? The answer is B", "B", "ABCD", True),  # last match of the highest rule
    ("answer: j", "J", "ABCDEFGHIJ", True),  # MMLU-Pro's ten options
]


@pytest.mark.parametrize("completion,gold,expected", MATH)
def test_math(completion, gold, expected):
    assert score(completion, {"ground_truth_answer": gold}, "math").correct is expected


@pytest.mark.parametrize("completion,gold,letters,expected", CHOICE)
def test_multiple_choice(completion, gold, letters, expected):
    assert score(completion, {"ground_truth_answer": gold}, "mc", letters=letters).correct is expected


def test_science_is_multiple_choice_and_chat_is_unscorable():
    row = {"ground_truth_answer": "B"}
    assert score("\\boxed{B}", row, "science").correct
    v = score("hello", {"ground_truth_answer": ""}, "chat")
    assert not v.scorable and v.correct is False
    assert extract_letter("") is None


def _block(code):
    return f"Here is my solution.\n```python\n{code}\n```\n"


ASSERTS = {"tests_json": json.dumps(["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])}
# (name, completion, row, correct, words expected in the failure detail)
CODE = [
    ("pass", _block("def add(a, b):\n    return a + b"), ASSERTS, True, ""),
    ("wrong answer", _block("def add(a, b):\n    return a - b"), ASSERTS, False, "AssertionError"),
    ("exception", _block("def add(a, b):\n    raise ValueError('no')"), ASSERTS, False, "ValueError"),
    ("infinite loop", _block("def add(a, b):\n    while True:\n        pass"), ASSERTS, False, "time limit"),
    ("fork bomb", _block("import os\nwhile True:\n    os.fork()\ndef add(a, b):\n    return a + b"), ASSERTS,
     False, ""),
    ("memory blow-up", _block("x = bytearray(16 * 1024 ** 3)\ndef add(a, b):\n    return a + b"), ASSERTS,
     False, "MemoryError"),
    ("sys.exit(0) before the tests", _block("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b"),
     ASSERTS, False, "exited"),
    ("os._exit(0) before the tests", _block("import os\nos._exit(0)"), ASSERTS, False, "exited"),
    ("no code block", "def add(a, b): return a + b", ASSERTS, False, "no code"),
    ("the block defining the function wins",
     "```python\nprint(add(1, 2))\n```\nand\n```python\ndef add(a, b):\n    return a + b\n```",
     dict(ASSERTS, fn_name="add"), True, ""),
    ("pytest", _block("def square(x):\n    return x * x"),
     {"tests_json": {"type": "pytest", "fn_name": "square",
                     "test_code": "from solution import square\ndef test_a():\n    assert square(3) == 9\n"}},
     True, ""),
    ("pytest, failing", _block("def square(x):\n    return x + x"),
     {"tests_json": {"type": "pytest", "fn_name": "square",
                     "test_code": "from solution import square\ndef test_a():\n    assert square(3) == 9\n"}},
     False, "test_a"),
    ("stdio", _block("a, b = map(int, input().split())\nprint(a + b)"),
     {"tests_json": {"type": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}]}}, True, ""),
    ("stdio, wrong output", _block("print(0)"),
     {"tests_json": {"type": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}]}}, False, "expected"),
    ("fn_call (one-element expected list unwrapped)", _block("def double(x):\n    return 2 * x"),
     {"tests_json": {"type": "fn_call", "fn_name": "double", "cases": [{"args": [2], "expected": [4]}]}},
     True, ""),
    ("tests_json as a Python literal", _block("def add(a, b):\n    return a + b"),
     {"tests_json": "['assert add(1, 2) == 3']"}, True, ""),
]


@pytest.mark.parametrize("name,completion,row,expected,detail", CODE, ids=[c[0] for c in CODE])
def test_code(name, completion, row, expected, detail):
    v = score(completion, dict(row, ground_truth_answer=""), "code", limits=LIMITS)
    assert v.correct is expected, v.detail
    assert detail in v.detail


@pytest.mark.parametrize("name,completion", [
    ("HumanEval", "def incr(x: int) -> int:\n    return x + 1\n```\n"),  # continues the opened fence
    ("MBPP", "def rev(s):\n    return s[::-1]\n```"),
    ("LiveCodeBench", _block("a, b = map(int, input().split())\nprint(a * b)")),
])
def test_code_benchmark_rows(name, completion):
    bench = resolve(name)
    row = load_rows(FIXTURES / f"{name}.json")[0]
    v = score(completion, row, "code", code_prefix=bench.code_prefix, limits=LIMITS)
    assert v.correct, v.detail
    wrong = score(completion.replace("+ 1", "+ 2").replace("[::-1]", "").replace("a * b", "a + b"), row,
                  "code", code_prefix=bench.code_prefix, limits=LIMITS)
    assert not wrong.correct


def test_code_row_without_tests_is_unscorable():
    v = score(_block("print(1)"), {"question": "q", "ground_truth_answer": ""}, "code", limits=LIMITS)
    assert not v.scorable


def test_a_write_outside_the_directory_is_not_seen_by_the_next_solution(tmp_path):
    """The first solution writes into /tmp, its parent directory and its HOME; the second one
    (a new sandbox) must see none of it, and neither does the host."""
    info = sandbox.isolation()
    if not info.get("private_tmp"):
        pytest.skip(f"no mount namespace on this machine ({info.get('errors')}): /tmp is shared")
    marker = "opdlm_escape_test_8c1f"
    writer = _block(f"""
import os
for path in ('/tmp/{marker}', '../{marker}', os.path.expanduser('~/{marker}'), '{tmp_path}/{marker}'):
    try:
        with open(path, 'w') as f:
            f.write('x')
    except OSError:
        pass
def add(a, b):
    return a + b""")
    assert score(writer, dict(ASSERTS, ground_truth_answer=""), "code", limits=LIMITS).correct
    reader = _block(f"""
import os
def add(a, b):
    return a + b
assert not os.path.exists('/tmp/{marker}')
assert not os.path.exists(os.path.expanduser('~/{marker}'))
assert not os.path.exists('{tmp_path}/{marker}')""")
    v = score(reader, dict(ASSERTS, ground_truth_answer=""), "code", limits=LIMITS)
    assert v.correct, v.detail
    assert not Path(f"/tmp/{marker}").exists() and not (tmp_path / marker).exists()
