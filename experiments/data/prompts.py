"""Loading and validating JSONL prompt files.

One record per line, a JSON object:
  {"prompt": str, "domain": "math" | "chat" | "continuation", "answer": str}
`answer` is required for math (the exact final answer string) and optional elsewhere. Other
keys are kept as they are. Blank lines are skipped. Every problem is reported as a
`PromptFileError` (a `ValueError`) naming the file and the 1-based line number.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

DOMAINS = ("math", "chat", "continuation")
SPLITS = ("train", "heldout")
DEMO_PROMPT_DIR = Path(__file__).resolve().parent / "demo_prompts"

PathLike = Union[str, "os.PathLike[str]"]


class PromptFileError(ValueError):
    """A prompt file that cannot be used as it is; the message names file and line."""


def _check_record(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("prompt", "domain"):
        if key not in record:
            raise PromptFileError(f"{where}: missing required field {key!r}")
    prompt, domain = record["prompt"], record["domain"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(f"{where}: field 'prompt' must be a non-empty string, got {prompt!r}")
    if domain not in DOMAINS:
        raise PromptFileError(
            f"{where}: unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if "answer" in record:
        answer = record["answer"]
        if not isinstance(answer, str) or not answer.strip():
            raise PromptFileError(
                f"{where}: field 'answer' must be a non-empty string, got {answer!r}")
    elif domain == "math":
        raise PromptFileError(f"{where}: math record is missing required field 'answer'")
    return dict(record)


def load_prompt_file(path: PathLike) -> list[dict]:
    """Read a JSONL prompt file into a list of validated records (in file order)."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    records = []
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
            records.append(_check_record(record, where))
    if not records:
        raise PromptFileError(f"{path}: empty prompt file (no records)")
    return records


def demo_prompt_path(split: str) -> Path:
    """Path of a shipped demo split: 'train' or 'heldout'."""
    if split not in SPLITS:
        raise ValueError(f"unknown demo prompt split {split!r}; expected one of {', '.join(SPLITS)}")
    return DEMO_PROMPT_DIR / f"{split}.jsonl"
