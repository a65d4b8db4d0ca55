"""The shipped demo prompt set: where its files are and what its records may hold.

Reading and validation are the library's (`opdlm_jax.data.prompt_records.read_prompt_records`);
this module only names the demo's files and its rules: domains from DOMAINS, and an exact answer
string on every record of ANSWER_DOMAINS (graded by answer matching). Read a demo split with

    read_prompt_records(demo_prompt_path("train"), allowed_domains=DOMAINS,
                        require_answer_for=ANSWER_DOMAINS)
"""
from __future__ import annotations

from pathlib import Path

DOMAINS = ("math", "chat", "continuation")
ANSWER_DOMAINS = ("math",)
SPLITS = ("train", "heldout")
DEMO_PROMPT_DIR = Path(__file__).resolve().parent / "demo_prompts"


def demo_prompt_path(split: str) -> Path:
    """Path of a shipped demo split: 'train' or 'heldout'."""
    if split not in SPLITS:
        raise ValueError(f"unknown demo prompt split {split!r}; expected one of {', '.join(SPLITS)}")
    return DEMO_PROMPT_DIR / f"{split}.jsonl"
