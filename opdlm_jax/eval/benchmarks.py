"""The paper's benchmarks: where their rows are, how a row becomes a prompt, and the budget.

Rows are the authors' format (Hugging Face dataset divelab/opdlm_eval_data, one `<NAME>.json` per
benchmark): a JSON list of objects with `question`, `ground_truth_answer`, optionally `domain`,
and for code the tests (see `opdlm_jax.eval.code_exec`). Facts below come from the reference's
`eval_utils.py` (DATASET_CONFIGS, prompt builders) and `pure_inference/eval.py` (budgets):

- math: "{question}\\nPlease reason step by step, and put your final answer within \\boxed{}."
- multiple choice: "{question}\\nPlease show your choice in the answer field with only the choice
  letter, e.g., "answer": "C"."; MMLU, MMLU-Pro and GPQA rewrite "(A) text" as "A. text" first.
- HumanEval / MBPP: the EvalPlus chat prompt: the user asks for "a self-contained Python script
  that solves the following problem in a markdown code block" with the question in a ``` fence,
  and the assistant turn is pre-filled with "Below is a Python script with a self-contained
  function that solves the problem and passes corresponding tests:" and an opened ```python
  fence, which the model continues. (The authors score these with EvalPlus's base and plus tests;
  we run the tests in the row: `test_list`, or `test` + `entry_point`.)
- LiveCodeBench (the stdio rows): "This is the problem:\\n{question}\\nYou should put your code in
  ```python ```. Use input() to read input and print() to produce output in your script. "
- every prompt goes through the tokenizer's chat template, thinking disabled.
- budgets (max new tokens): GSM8K 1000, MATH500 and AIME2024 2000, everything else 2048 (the
  authors' 4B/8B wrappers raise all to 16000). AIME2025 is not in their table of budgets, so it
  gets 2048 like the rest.
- domain of a row: its own `domain`, else the benchmark's, else math.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional

from opdlm_jax.data.chat_format import MATH_SUFFIX, MC_SUFFIX, ChatFormat, prompt_token_ids
from opdlm_jax.data.prompt_records import PromptRecord
from opdlm_jax.errors import BadInput

MATH_TEMPLATE = "{question}\n" + MATH_SUFFIX
MC_TEMPLATE = "{question}\n" + MC_SUFFIX
LCB_STDIO_TEMPLATE = ("This is the problem:\n{question}\nYou should put your code in ```python ```. "
                      "Use input() to read input and print() to produce output in your script. ")
EVALPLUS_INSTRUCTION = ("Please provide a self-contained Python script that solves the following "
                        "problem in a markdown code block:")
EVALPLUS_RESPONSE = ("Below is a Python script with a self-contained function that solves the "
                     "problem and passes corresponding tests:")
EVALPLUS_OPENED = "```python\n"  # what the prompt ends with: the completion continues inside it
DEFAULT_BUDGET = 2048
_PLAIN = ChatFormat(suffixes={})  # the benchmark template already holds any instruction


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """name: the authors' file stem. domain None: per row (math when the row has none).
    prompt_style: "template" ("{question}" in `template` replaced), "evalplus", or "plain" (the
    question as it is). registered False: an unknown name, scored by its rows' domains."""
    name: str
    domain: Optional[str]
    max_new_tokens: int = DEFAULT_BUDGET
    prompt_style: str = "template"
    template: Optional[str] = None
    letters: Optional[str] = None
    reformat_choices: bool = False
    aliases: tuple[str, ...] = ()
    registered: bool = True

    @property
    def code_prefix(self) -> str:
        """What the prompt already opened the answer with (see `scorers.score`)."""
        return EVALPLUS_OPENED if self.prompt_style == "evalplus" else ""


def _mc(name: str, letters: Optional[str], reformat: bool, aliases: tuple[str, ...] = ()) -> Benchmark:
    return Benchmark(name, "mc", template=MC_TEMPLATE, letters=letters, reformat_choices=reformat,
                     aliases=aliases)


REGISTRY: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("GSM8K", "math", 1000, template=MATH_TEMPLATE),
    Benchmark("MATH500", "math", 2000, template=MATH_TEMPLATE),
    Benchmark("AIME2024", "math", 2000, template=MATH_TEMPLATE),
    Benchmark("AIME2025", "math", DEFAULT_BUDGET, template=MATH_TEMPLATE),
    _mc("MMLU", "ABCD", True),
    _mc("MMLU_Pro", "ABCDEFGHIJ", True, ("MMLU-Pro",)),
    _mc("GPQA_Diamond_shuffled", "ABCD", True, ("GPQA-Diamond", "GPQA_Diamond")),
    _mc("ARC_C", "ABCDE", False, ("ARC-C",)),
    _mc("CEval", None, False, ("C-Eval",)),  # options already "A. text"; letters A-J as the reference
    Benchmark("HumanEval", "code", prompt_style="evalplus"),
    Benchmark("MBPP", "code", prompt_style="evalplus"),
    Benchmark("LiveCodeBench", "code", template=LCB_STDIO_TEMPLATE),
)}
_BY_ALIAS = {alias.lower(): b for b in REGISTRY.values() for alias in (b.name, *b.aliases)}


def resolve(name: str) -> Benchmark:
    """The registered benchmark called `name` (or an alias, any case); an unregistered name gets
    a plain prompt, the default budget and per-row domains (`registered` False)."""
    found = _BY_ALIAS.get(name.lower())
    if found is not None:
        return found
    return Benchmark(name, None, prompt_style="plain", registered=False)


def data_file(data_dir: str | Path, bench: Benchmark, requested: str) -> Path:
    """`<name>.json` (or an alias's file) in `data_dir`; BadInput naming what is there if absent."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BadInput(f"--data-dir {data_dir}: no such directory")
    for stem in dict.fromkeys((requested, bench.name, *bench.aliases)):
        for suffix in (".json", ".jsonl"):
            if (data_dir / f"{stem}{suffix}").is_file():
                return data_dir / f"{stem}{suffix}"
    present = sorted(p.stem for p in data_dir.glob("*.json*"))
    shown = ", ".join(present[:30]) + (" ..." if len(present) > 30 else "")
    raise BadInput(f"no {requested}.json in {data_dir} (it has: {shown or 'no .json files'}); "
                   "download the evaluation data with `huggingface-cli download divelab/opdlm_eval_data "
                   "--repo-type dataset --local-dir DIR`")


def load_rows(path: Path) -> list[dict]:
    """The rows of a benchmark file (a JSON list, or JSON lines); each needs a `question`."""
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except ValueError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise BadInput(f"{path}: neither a JSON list nor JSON lines ({e})") from None
    if not isinstance(rows, list) or not rows:
        raise BadInput(f"{path}: expected a non-empty JSON list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInput(f"{path} row {i}: expected an object, got {type(row).__name__}")
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise BadInput(f"{path} row {i}: missing or empty 'question'")
    return rows


def row_domain(row: dict, bench: Benchmark) -> str:
    """The authors' rule: the row's own domain, else the benchmark's, else math."""
    return row.get("domain") or bench.domain or "math"


def reformat_choices(question: str) -> str:
    """"(A) text" -> "A. text", as the reference does for MMLU, MMLU-Pro and GPQA."""
    return re.sub(r"\(([A-J])\)\s*", r"\1. ", question)


def user_text(row: dict, bench: Benchmark) -> str:
    """The user turn for template and plain prompts."""
    q = row["question"]
    if bench.reformat_choices:
        q = reformat_choices(q)
    if bench.prompt_style == "template" and bench.template:
        return bench.template.replace("{question}", q)  # not str.format: "\\boxed{}" has braces
    return q


def _evalplus_prompt(tokenizer, question: str) -> Optional[str]:
    if not getattr(tokenizer, "chat_template", None):
        return None
    magic = "\u0000OPDLM-PREFILL\u0000"
    user = f"{EVALPLUS_INSTRUCTION}\n```\n{question.strip()}\n```\n"
    assistant = f"{EVALPLUS_RESPONSE}\n{EVALPLUS_OPENED}{magic}\n```\n"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        tokenize=False, enable_thinking=False)
    return rendered.split(magic)[0]


def prompt_for(tokenizer, row: dict, bench: Benchmark) -> tuple[str, list[int]]:
    """(the prompt as text, its token ids) for one row."""
    if bench.prompt_style == "evalplus":
        text = _evalplus_prompt(tokenizer, row["question"])
        if text is not None:
            return text, [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    text = user_text(row, bench)
    return text, prompt_token_ids(tokenizer, PromptRecord(prompt=text, domain="chat"), _PLAIN)


def describe(bench: Benchmark) -> str:
    if bench.registered:
        return f"{bench.name}: registered ({bench.domain or 'per-row'} domain, budget {bench.max_new_tokens})"
    return (f"{bench.name}: not a registered benchmark; scored by each row's domain (math when "
            f"absent) with the question as a plain prompt, budget {bench.max_new_tokens}")
