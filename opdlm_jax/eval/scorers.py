"""Score one completion of one benchmark row, as the authors' evaluation does.

Facts from the reference (reward/domain_reward.py, eval_utils.py of divelab/OPDLM):
- math: `math_verify.parse` over the completion with the expression and LaTeX extractors (LaTeX
  boxed answers take priority inside math-verify; several boxes give a tuple); the extracted
  string and the gold answer are each re-wrapped in `\\boxed{}`, parsed again and compared with
  `math_verify.verify`. Nothing extracted is wrong.
- multiple choice ("mc", and "science" which the reference aliases to it): the option letter from
  `\\boxed{X}`, else `answer: X` / `"answer": "X"`, else `answer is X`, else the last standalone
  capital letter; the last match within each rule wins; letters limited per benchmark (ABCD for
  GPQA and MMLU, ABCDE for ARC-C, A-J for MMLU-Pro). This is deliberately looser than
  `opdlm_jax.eval.answers.extract_choice` (no bare-letter fallback there): Table 1 was scored
  with the reference's rule.
- code: see `opdlm_jax.eval.code_exec`.
- chat (and any domain without a checker): unscorable, left out of the accuracy.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

from opdlm_jax.eval import code_exec, sandbox

DOMAIN_ALIASES = {"science": "mc"}  # the reference's DOMAIN_ALIASES
SCORED_DOMAINS = ("math", "mc", "code")
DEFAULT_LETTERS = "ABCDEFGHIJ"


@dataclasses.dataclass(frozen=True)
class Verdict:
    extracted: Optional[str]
    correct: bool
    scorable: bool = True
    detail: str = ""


def canonical_domain(domain: Optional[str]) -> str:
    domain = (domain or "math").strip()
    return DOMAIN_ALIASES.get(domain, domain)


# --------------------------------------------------------------------------- math

def _math_verify():
    try:
        import math_verify
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("math scoring needs the math-verify package: pip install math-verify") from e
    return math_verify


def extract_math(text: str) -> Optional[str]:
    """The answer string math-verify finds in a completion (None when none)."""
    mv = _math_verify()
    try:
        found = mv.parse(text or "", extraction_config=[mv.ExprExtractionConfig(), mv.LatexExtractionConfig()])
    except Exception:  # noqa: BLE001 - math-verify raises on pathological input; that is "no answer"
        return None
    if not found:
        return None
    return str(found[1] if len(found) > 1 else found[0])


def math_equivalent(extracted: Optional[str], gold: Any) -> bool:
    if extracted is None or gold is None:
        return False
    mv = _math_verify()
    latex = [mv.LatexExtractionConfig()]
    try:
        want = mv.parse("\\boxed{" + str(gold) + "}", extraction_config=latex)
        got = mv.parse("\\boxed{" + str(extracted) + "}", extraction_config=latex)
        return bool(mv.verify(want, got))
    except Exception:  # noqa: BLE001
        return False


# --------------------------------------------------------------------------- multiple choice

def extract_letter(text: str, letters: Optional[str] = None) -> Optional[str]:
    """The chosen option letter by the reference's rules (module docstring), or None."""
    text = (text or "").strip()
    if not text:
        return None
    letters = (letters or DEFAULT_LETTERS).upper()
    cls = f"[{letters}{letters.lower()}]"
    rules = (
        rf"\\boxed\{{\s*(?:\\text(?:bf|rm|sf|tt|it)?\s*\{{)?\s*({cls})",  # \boxed{C}, \boxed{\text{C}}
        rf"(?i)\banswer\b[\s*\"')\]]*[:=][\s*\"'$(]*({cls})",  # Answer: C, "answer": "C"
        rf"(?i)\banswer\b[\s*\"']*\bis\b[\s*\"'$(:.]*(?:option|choice|letter)?[\s*\"'$(:.]*({cls})\b",
        rf"\b([{letters}])\b",  # the last standalone capital
    )
    for rule in rules:
        found = re.findall(rule, text)
        if found:
            return found[-1].upper()
    return None


def letters_equal(extracted: Optional[str], gold: Any) -> bool:
    if extracted is None or gold is None:
        return False
    return str(extracted).strip().strip("()").upper() == str(gold).strip().strip("()").upper()


# --------------------------------------------------------------------------- dispatch

def score(completion: str, row: Mapping[str, Any], domain: str, *, letters: Optional[str] = None,
          code_prefix: str = "", limits: sandbox.Limits = sandbox.Limits()) -> Verdict:
    """Verdict for one completion of `row` under `domain` (math | mc | science | code | other).

    code_prefix: text the prompt already opened the answer with (the EvalPlus prompt ends inside
    a ```python fence), prepended before the code block is extracted.
    """
    domain = canonical_domain(domain)
    gold = row.get("ground_truth_answer")
    if domain == "math":
        extracted = extract_math(completion)
        return Verdict(extracted, math_equivalent(extracted, gold),
                       detail="" if extracted is not None else "no answer found")
    if domain == "mc":
        extracted = extract_letter(completion, letters)
        return Verdict(extracted, letters_equal(extracted, gold),
                       detail="" if extracted is not None else "no option letter found")
    if domain == "code":
        tests = code_exec.tests_of(row)
        if tests is None:
            return Verdict(None, False, scorable=False, detail="the row has no usable tests")
        text = code_prefix + (completion or "")
        if code_prefix and "```" not in (completion or ""):
            text += "\n```"  # the model never closed the fence the prompt opened
        code = code_exec.extract_code(text, code_exec.function_name(row))
        verdict = code_exec.run_tests(code, tests, limits=limits)
        return Verdict(code, verdict.passed, detail=verdict.detail)
    return Verdict(None, False, scorable=False, detail=f"domain {domain!r} has no checker")
