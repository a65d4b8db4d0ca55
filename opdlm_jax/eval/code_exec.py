"""Code answers: pull the python program out of a completion, find a row's tests, run both in
the sandbox (`opdlm_jax.eval.sandbox`). A response is correct when every test passes.

Test shapes of the authors' rows (reward/domain_reward.py and reward/rl_execute.py of the
reference), in the order they are looked for:
- `tests_json` (a JSON string, a Python-literal string, or already parsed):
    a list of assert statements                         -> "asserts"
    {"type": "pytest", "test_code", "fn_name"}           -> "pytest"
    {"type": "stdio", "cases": [{"input", "output"}]}    -> "stdio" (stripped output compared)
    {"type": "fn_call", "fn_name", "cases": [{"args", "expected"}]} -> "fn_call"
- `test_list` (MBPP, the HumanEval conversion): assert statements, after `test_setup_code`;
- `test` + `entry_point` (HumanEval's `def check(candidate)`): `check(<entry_point>)`;
- `test_input` / `test_output` lists (the LiveCodeBench rows): "stdio", output compared token
  by token (the reference's whitespace-insensitive `test_if_eq`), `test_time_limit` per case.
A row with none of these (or an fn_call whose args are not lists) is unscorable, and the
reference leaves such rows out of the accuracy; so do we.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
import secrets
from pathlib import Path
from typing import Any, Mapping, Optional

from opdlm_jax.eval import sandbox

RUNNER = Path(__file__).resolve().parent / "code_runner.py"


@dataclasses.dataclass(frozen=True)
class CodeVerdict:
    passed: bool
    detail: str  # why it failed ("" when it passed)
    timed_out: bool = False


def _parse_tests_json(raw: Any) -> Any:
    if raw is None or raw == "N/A":
        return None
    if isinstance(raw, (list, dict)):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        try:  # some rows hold a Python repr (single quotes), not JSON
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None


def tests_of(row: Mapping[str, Any]) -> Optional[dict]:
    """The row's tests as a runner payload (see code_runner.py), or None when it has none."""
    parsed = _parse_tests_json(row.get("tests_json"))
    if isinstance(parsed, list):
        asserts = [a for a in parsed if isinstance(a, str) and a.strip()]
        return {"kind": "asserts", "asserts": asserts} if asserts else None
    if isinstance(parsed, dict):
        kind = parsed.get("type")
        if kind == "pytest" or "test_code" in parsed:
            return {"kind": "pytest", "test_code": parsed["test_code"]} if parsed.get("test_code") else None
        if kind == "stdio" and parsed.get("cases"):
            return {"kind": "stdio", "cases": parsed["cases"], "compare": "strip"}
        if kind == "fn_call" and parsed.get("fn_name") and parsed.get("cases"):
            if not all(isinstance(c.get("args"), list) for c in parsed["cases"]):
                return None  # the reference's known-broken TACO rows
            return {"kind": "fn_call", "fn_name": parsed["fn_name"], "cases": parsed["cases"]}
        return None
    if row.get("test_list"):
        setup = row.get("test_setup_code") or ""
        asserts = ([setup] if setup.strip() else []) + [t for t in row["test_list"] if isinstance(t, str)]
        return {"kind": "asserts", "asserts": asserts}
    if row.get("test") and row.get("entry_point"):
        return {"kind": "asserts", "asserts": [row["test"], f"check({row['entry_point']})"]}
    inputs, outputs = row.get("test_input"), row.get("test_output")
    if isinstance(inputs, list) and isinstance(outputs, list) and inputs and len(inputs) == len(outputs):
        return {"kind": "stdio", "compare": "tokens", "case_timeout_s": float(row.get("test_time_limit") or 1),
                "cases": [{"input": i, "output": o} for i, o in zip(inputs, outputs)]}
    return None


def function_name(row: Mapping[str, Any]) -> Optional[str]:
    """The function under test, used to pick the right code block: the row's `fn_name`, the one
    in its tests_json, else its `entry_point` (the reference's order)."""
    if row.get("fn_name"):
        return row["fn_name"]
    parsed = _parse_tests_json(row.get("tests_json"))
    if isinstance(parsed, dict) and parsed.get("fn_name"):
        return parsed["fn_name"]
    return row.get("entry_point") or None


_PY_BLOCK = re.compile(r"```python\s*\n?(.*?)```", re.DOTALL)
_ANY_BLOCK = re.compile(r"```\s*\n?(.*?)```", re.DOTALL)


def extract_code(text: str, fn_name: Optional[str] = None) -> str:
    """The program in a completion: its ```python blocks (else any ``` blocks); the first block
    that defines `fn_name` when one does, else all blocks joined. "" when there is no block."""
    blocks = _PY_BLOCK.findall(text or "") or _ANY_BLOCK.findall(text or "")
    if not blocks:
        return ""
    if fn_name:
        defines = re.compile(rf"\bdef\s+{re.escape(fn_name)}\s*\(")
        for b in blocks:
            if defines.search(b):
                return b.strip()
    return "\n\n".join(b.strip() for b in blocks)


def run_tests(code: str, tests: Mapping[str, Any], *, limits: sandbox.Limits = sandbox.Limits()) -> CodeVerdict:
    """Run `code` against a payload from `tests_of`, in a fresh sandbox."""
    if not code.strip():
        return CodeVerdict(False, "no code block in the completion")
    marker = "OPDLM-TESTS-PASSED-" + secrets.token_hex(8)
    files = {"solution.py": code, "tests.json": json.dumps(dict(tests)),
             "code_runner.py": RUNNER.read_text(encoding="utf-8")}
    r = sandbox.run(["python", "-I", "code_runner.py", marker], files, limits=limits)
    if r.timed_out:
        return CodeVerdict(False, f"time limit ({limits.timeout_s:g} s)", timed_out=True)
    lines = r.stdout.rstrip().splitlines()
    if r.returncode == 0 and lines and lines[-1] == marker:
        return CodeVerdict(True, "")
    reason = next((ln[5:] for ln in r.stderr.splitlines() if ln.startswith("FAIL ")), None)
    if reason is None:
        tail = r.stderr.strip().splitlines()[-1:] or [""]
        reason = f"exit status {r.returncode}" + (f": {tail[0][:300]}" if tail[0] else "")
        if r.returncode == 0:
            reason = "the program exited before the tests finished"
    return CodeVerdict(False, reason)
