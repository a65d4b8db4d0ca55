"""Prompt sets for the experiments: the shipped demo prompts and their loader.

`load_prompt_file` reads and validates a JSONL prompt file; `demo_prompt_path` names the shipped
demo split files. `build_prompts` regenerates the demo set (it needs the optional text packages
named in its error message; loading the shipped files needs nothing beyond the standard library).
"""
from experiments.data.prompts import DOMAINS, PromptFileError, demo_prompt_path, load_prompt_file

__all__ = ["DOMAINS", "PromptFileError", "demo_prompt_path", "load_prompt_file"]
