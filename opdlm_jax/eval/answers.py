"""Answer extraction and comparison for the benchmarks of the paper (math, multiple choice).

What the reference evaluation asks the model for (the reference evaluation code; docs/METHOD.md, section 6):
- math: "... put your final answer within \\boxed{}." -> `extract_boxed` (the LAST complete
  `\\boxed{...}` or `\\fbox{...}`, nested braces allowed), else `last_number`.
- multiple choice: "... show your choice in the answer field with only the choice letter, e.g.,
  "answer": "C"." -> `extract_choice`.

Comparison (`math_equal`) covers the simple forms a short math answer takes: integers,
decimals, fractions (`\\frac{a}{b}`, `\\dfrac`, `\\tfrac`, `\\frac12`, `a/b`), thousands commas,
trailing zeros, `$...$`, `\\text{...}` units, spaces and a leading `x =`. Numbers are compared
exactly as rationals (0.5 == 1/2, but 0.333 != 1/3). It is not a symbolic algebra system:
`\\sqrt{2}/2` vs `\\frac{\\sqrt{2}}{2}` match only when both normalise to the same string.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Iterable, Sequence

# --------------------------------------------------------------------------- boxed answers

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at `open_at` (nested groups allowed), or None if
    the group is never closed. Escaped braces `\\{` `\\}` do not count."""
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
        i += 1
    return None


def extract_boxed(text: str | None) -> str | None:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` in `text` (the last box wins).

    Nested braces are matched (`\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`). The brace-less form
    `\\boxed 5` yields the following word. If the last box is never closed (a truncated
    generation) the result is None, not an earlier box: an unfinished final answer is no answer.
    """
    if not text:
        return None
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        content = _braced(text, end + (len(rest) - len(stripped)))
        return None if content is None else content.strip()
    word = re.match(r"\s+([^\s$]+)", rest)  # "\boxed 5$"
    return word.group(1) if word else None


# --------------------------------------------------------------------------- multiple choice

DEFAULT_LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has ten options


def extract_choice(text: str | None, letters: str = DEFAULT_LETTERS) -> str | None:
    """The chosen option letter (upper case), or None.

    In order of precedence; within a rule the LAST occurrence wins:
    1. the reference's JSON-ish field: `"answer": "C"` (key in single or double quotes, any
       case; the value may be unquoted, parenthesised or lower case: `"answer": "(c)"`);
    2. `\\boxed{C}` (or `\\boxed{(C)}`, `\\boxed{\\text{C}}`);
    3. `Answer: C`, `answer is C`, `answer: (C)`: the word "answer" (any case) followed by ":" or
       "is" and an UPPER-case letter that is not the start of a word ("Answer: Clearly" is not C);
    4. a parenthesised upper-case letter `(C)` anywhere.
    A bare letter elsewhere is not accepted (too many false positives: "A", "I").
    """
    if not text:
        return None
    cls = re.escape(letters.upper() + letters.lower())
    upper = re.escape(letters.upper())
    json_form = re.findall(r"""["']answer["']\s*:\s*["']?\s*\(?([%s])\)?\s*["']?(?![A-Za-z])""" % cls,
                           text, flags=re.IGNORECASE)
    if json_form:
        return json_form[-1].upper()
    boxed = extract_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\text\{([^{}]*)\}", r"\1", boxed).strip().strip("()").strip()
        if len(inner) == 1 and inner.upper() in letters.upper():
            return inner.upper()
    answer_form = re.findall(r"(?i:answer)\s*(?:is|:)\s*[:\s]*\(?([%s])\)?(?![A-Za-z])" % upper, text)
    if answer_form:
        return answer_form[-1]
    paren = re.findall(r"\(([%s])\)" % upper, text)
    if paren:
        return paren[-1]
    return None


# --------------------------------------------------------------------------- numbers

# An optional sign (only where it is not a binary minus: "3-5" is 3 and 5), digits with or
# without thousands commas, an optional decimal part, an optional "/denominator".
_NUMBER = re.compile(r"""
    (?:(?<![\w.])-)?                       # sign, not after a word char ("3-5", "x-1")
    (?:\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))  # 1,234,567 | 1234 | (nothing before ".5")
    (?:\.\d+)?                             # decimal part (a final "." is punctuation)
    (?:\s*/\s*\d+(?:\.\d+)?)?              # fraction a/b
    """, re.VERBOSE)


def last_number(text: str | None) -> str | None:
    """The last number in `text`, thousands commas removed: integers, negatives, decimals
    (`.5` -> `0.5`), fractions `a/b`. The sentence's final period is not part of it."""
    if not text:
        return None
    found = [m.group(0) for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group(0))]
    if not found:
        return None
    number = re.sub(r"\s+", "", found[-1]).replace(",", "")
    return re.sub(r"(^|-)\.", r"\g<1>0.", number)


def parse_number(s: str | None) -> Fraction | None:
    """`s` as an exact rational: '12', '-3.50', '1,234' (not '1,2'), '3/4', '-1/2', '(3)/(4)', '.5'; else None."""
    if s is None:
        return None
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s.strip())  # thousands separators only
    m = re.fullmatch(r"\(?(-?\d*\.?\d+)\)?(?:/\(?(-?\d*\.?\d+)\)?)?", s)
    if not m:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError):
        return None
    return value


def gsm8k_gold(answer: str) -> str:
    """The gold answer of a GSM8K solution: the text after its final '####', commas removed."""
    return answer.split("####")[-1].strip().replace(",", "")


# --------------------------------------------------------------------------- normalisation

_SIMPLE_ATOM = re.compile(r"-?[\w.]+")


def _strip_text_groups(s: str) -> str:
    """`\\text{...}`/`\\mbox{...}`/`\\mathrm{...}`: dropped when something else remains (units:
    `5\\text{ cm}` -> `5`), else replaced by their content (`\\text{Monday}` -> `Monday`)."""
    pattern = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}]*)\}")
    without = pattern.sub("", s).strip()
    if without and re.search(r"[\w\\]", without):
        return without
    return pattern.sub(r"\1", s)


def _frac_to_slash(s: str) -> str:
    """`\\frac{a}{b}` (innermost first) and `\\frac12` -> `a/b`, parenthesising non-atoms."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    pattern = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")

    def repl(m):
        num, den = m.group(1).strip(), m.group(2).strip()
        num = num if _SIMPLE_ATOM.fullmatch(num) else f"({num})"
        den = den if _SIMPLE_ATOM.fullmatch(den) else f"({den})"
        return f"{num}/{den}"

    previous = None
    while previous != s:
        previous, s = s, pattern.sub(repl, s)
    return s


def _canonical_decimal(m: re.Match) -> str:
    whole, frac = m.group(1), m.group(2).rstrip("0")
    whole = whole or "0"
    return f"{whole}.{frac}" if frac else whole


def normalize_math(s: str | None) -> str:
    """A canonical string for a short math answer (see the module docstring for what it covers).

    '$\\dfrac{3}{4}$' -> '3/4'; 'x = 1,000' -> '1000'; '3.50' -> '3.5'; '2.0' -> '2';
    '5\\text{ cm}' -> '5'; '\\left( 1, 2 \\right)' -> '(1,2)'; '50\\%' -> '50'.
    """
    if s is None:
        return ""
    s = str(s).strip()
    # Surrounding math delimiters, possibly several layers.
    previous = None
    while previous != s:
        previous = s
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left):len(s) - len(right)].strip()
        inner = extract_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
        if inner is not None:
            s = inner
    s = s.rstrip(".").strip()
    s = _strip_text_groups(s)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle"):
        s = s.replace(token, "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("~", " ")
    # A leading "x =" / "k=" (one assignment to a short name).
    parts = s.split("=")
    if len(parts) == 2 and re.fullmatch(r"\s*[A-Za-z]{1,2}(?:_\{?\w+\}?)?\s*", parts[0]):
        s = parts[1]
    s = _frac_to_slash(s)
    s = re.sub(r"\s+", "", s)
    # Thousands separators: 1,234,567 (groups of exactly three digits after the first comma).
    s = re.sub(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])",
               lambda m: m.group(1).replace(",", ""), s)
    s = re.sub(r"(?<![\w.])(\d*)\.(\d+)(?![\d])", _canonical_decimal, s)  # 3.50 -> 3.5, .5 -> 0.5
    s = re.sub(r"^\+", "", s)
    s = s.rstrip(".")
    return s


def math_equal(pred: str | None, gold: str | None, *, rel_tol: float = 0.0) -> bool:
    """True when two short math answers agree after `normalize_math`.

    Equal strings, or both numbers (int, decimal, a/b) with the same exact rational value (or
    within `rel_tol`, off by default). Tuples/intervals with the same brackets are compared
    element by element. `pred` None (no answer extracted) is never correct.
    """
    if pred is None or gold is None:
        return False
    a, b = normalize_math(pred), normalize_math(gold)
    if not a or not b:
        return False
    if a == b:
        return True
    x, y = parse_number(a), parse_number(b)
    if x is not None and y is not None:
        if x == y:
            return True
        return rel_tol > 0 and math.isclose(float(x), float(y), rel_tol=rel_tol)
    if len(a) > 2 and len(b) > 2 and a[0] + a[-1] == b[0] + b[-1] and a[0] in "([{" and a[-1] in ")]}":
        xs, ys = _split_top_level(a[1:-1]), _split_top_level(b[1:-1])
        if len(xs) == len(ys) > 1:
            return all(math_equal(p, q, rel_tol=rel_tol) for p, q in zip(xs, ys))
    return False


def _split_top_level(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def extract_math_answer(text: str | None) -> str | None:
    """The final answer of a math solution: the last box, else the last number."""
    boxed = extract_boxed(text)
    return boxed if boxed is not None else last_number(text)


def exact_match(pred: str | None, gold: str | None, *, ignore_case: bool = True,
                ignore_whitespace: bool = True) -> bool:
    """Plain string match (code outputs, short text answers); None never matches."""
    if pred is None or gold is None:
        return False
    a, b = str(pred), str(gold)
    if ignore_whitespace:
        a, b = " ".join(a.split()), " ".join(b.split())
    if ignore_case:
        a, b = a.lower(), b.lower()
    return a == b


def score_math(text: str | None, gold: str) -> bool:
    return math_equal(extract_math_answer(text), gold)


def score_choice(text: str | None, gold: str, letters: str = DEFAULT_LETTERS) -> bool:
    choice = extract_choice(text, letters)
    return choice is not None and choice == gold.strip().strip("()").upper()


# --------------------------------------------------------------------------- aggregation

def mean_and_std(values: Iterable[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation over seeds (the paper's "mean ± std", Table 9).

    ddof=1 (sample standard deviation, the usual choice for N seeds; the paper does not say
    which); one value gives std 0.0. Raises ValueError on no values or NaN.
    """
    xs: Sequence[float] = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_and_std of no values")
    if any(math.isnan(v) for v in xs):
        raise ValueError(f"mean_and_std got NaN among {xs}")
    mean = sum(xs) / len(xs)
    if len(xs) <= ddof:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in xs) / (len(xs) - ddof)
    return mean, math.sqrt(var)
