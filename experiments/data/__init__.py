"""Prompt sets for the experiments: the shipped demo prompts.

`demo_prompt_path` names the shipped demo split files, `DOMAINS` and `ANSWER_DOMAINS` are their
rules; reading and validating them is `opdlm_jax.data.prompt_records.read_prompt_records`.
`build_prompts` regenerates the demo set (it needs the optional text packages named in its error
message; loading the shipped files does not).
"""
from experiments.data.prompts import ANSWER_DOMAINS, DOMAINS, demo_prompt_path

__all__ = ["ANSWER_DOMAINS", "DOMAINS", "demo_prompt_path"]
