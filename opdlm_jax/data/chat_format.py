"""Prompt record -> chat-templated token ids (docs/METHOD.md, section 5).

The user turn is the record's prompt plus its domain's suffix; the tokenizer's chat template is
applied with `add_generation_prompt=True` and `enable_thinking=False` (Qwen3's template then
injects the empty think block; templates that do not know the flag ignore it).

Suffixes. The reference (OPDLM's eval configs) builds math prompts as
`"{question}\\nPlease reason step by step, and put your final answer within \\boxed{}."`, i.e. the
suffix is joined with a single newline, and the multiple-choice ("mc"/science) prompts likewise with
"Please show your choice in the answer field with only the choice letter, e.g., "answer": "C"."
Code and chat prompts are used raw. The defaults below reproduce that: each suffix string is
appended verbatim, and carries its own leading "\\n". OPDLM's released training set already has the
suffixes baked into its questions, so a prompt that already ends with its suffix text is left as it
is (`skip_suffix_if_present`).

Long prompts: a prompt whose token count exceeds `max_prompt_tokens` is either skipped (counted
by the caller, see `loader.py`) or raised as a `PromptTooLongError` naming the record index and its
length, according to `on_too_long` ("skip" | "error").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from opdlm_jax.data.prompt_records import PromptDataError, PromptRecord

MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
MC_SUFFIX = ('Please show your choice in the answer field with only the choice letter, '
             'e.g., "answer": "C".')
SUFFIX_SEPARATOR = "\n"
DEFAULT_DOMAIN_SUFFIXES: Mapping[str, str] = {
    "math": SUFFIX_SEPARATOR + MATH_SUFFIX,
    "science": SUFFIX_SEPARATOR + MC_SUFFIX,
    "mc": SUFFIX_SEPARATOR + MC_SUFFIX,
}
ON_TOO_LONG = ("skip", "error")


class PromptTooLongError(PromptDataError):
    """A prompt longer than `max_prompt_tokens` with on_too_long="error"."""


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """How records become token ids.

    suffixes: domain -> text appended verbatim to the prompt (domains not listed get none).
    system_prompt: an optional system turn before the user turn.
    enable_thinking: passed to the chat template (False = Qwen3 non-thinking mode).
    raw_domains: domains whose prompt (+suffix) is tokenized without any chat template
      (e.g. plain-text continuation for a base LM). Empty by default: every domain is templated.
    chat_template: overrides the tokenizer's own template when set.
    max_prompt_tokens: the longest prompt kept (None: no limit); on_too_long: "skip" | "error".
    """
    suffixes: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_DOMAIN_SUFFIXES))
    system_prompt: Optional[str] = None
    enable_thinking: bool = False
    skip_suffix_if_present: bool = True
    raw_domains: Sequence[str] = ()
    chat_template: Optional[str] = None
    max_prompt_tokens: Optional[int] = None
    on_too_long: str = "skip"

    def __post_init__(self):
        if self.on_too_long not in ON_TOO_LONG:
            raise ValueError(f"on_too_long must be one of {ON_TOO_LONG}, got {self.on_too_long!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens <= 0:
            raise ValueError(f"max_prompt_tokens must be positive or None, "
                             f"got {self.max_prompt_tokens}")


def chat_format_from_config(config: Mapping[str, Any]) -> ChatFormat:
    """The ChatFormat of a training config: `data.suffixes` when set, else the defaults.

    `config` is the trainer's ConfigDict or its JSON dump (a run's config.json). Training and
    evaluation both build their format here, so the same record gives the same prompt ids.
    """
    suffixes = config["data"].get("suffixes")
    return ChatFormat() if suffixes is None else ChatFormat(suffixes=dict(suffixes))


def _as_record(record: Any, index: int = 0) -> PromptRecord:
    if isinstance(record, PromptRecord):
        return record
    answer = record.get("answer")
    return PromptRecord(prompt=record["prompt"], domain=record["domain"],
                        answer=answer, index=int(record.get("index", index)))


def user_content(record: Any, fmt: ChatFormat = ChatFormat()) -> str:
    """The user turn's text: the prompt plus its domain's suffix."""
    record = _as_record(record)
    suffix = fmt.suffixes.get(record.domain, "")
    if not suffix:
        return record.prompt
    if fmt.skip_suffix_if_present and record.prompt.rstrip().endswith(suffix.strip()):
        return record.prompt
    return record.prompt + suffix


def messages_for(record: Any, fmt: ChatFormat = ChatFormat()) -> list[dict]:
    messages = []
    if fmt.system_prompt is not None:
        messages.append({"role": "system", "content": fmt.system_prompt})
    messages.append({"role": "user", "content": user_content(record, fmt)})
    return messages


def prompt_token_ids(tokenizer, record: Any, fmt: ChatFormat = ChatFormat()) -> list[int]:
    """Token ids of the templated prompt, ending with the assistant's generation prompt.

    No length check here; see `encode_record`.
    """
    record = _as_record(record)
    if record.domain in fmt.raw_domains:
        return list(tokenizer.encode(user_content(record, fmt), add_special_tokens=False))
    template = fmt.chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise PromptDataError(
            f"record {record.index}: the tokenizer has no chat template; set "
            "ChatFormat.chat_template or list the domain in ChatFormat.raw_domains")
    ids = tokenizer.apply_chat_template(
        messages_for(record, fmt), chat_template=fmt.chat_template, add_generation_prompt=True,
        tokenize=True, return_dict=False, enable_thinking=fmt.enable_thinking)
    if isinstance(ids, Mapping):  # older transformers versions ignore return_dict=False
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """A plain user message as training formats a "chat" record (no suffix): for generate, demos
    and benchmarks that take free text."""
    return prompt_token_ids(tokenizer, PromptRecord(prompt=text, domain="chat"))


def encode_record(tokenizer, record: Any, fmt: ChatFormat = ChatFormat()) -> Optional[list[int]]:
    """Templated token ids, or None when the prompt is too long and on_too_long="skip".

    Raises `PromptTooLongError` (naming the record index and the length) with on_too_long="error".
    """
    record = _as_record(record)
    ids = prompt_token_ids(tokenizer, record, fmt)
    if fmt.max_prompt_tokens is not None and len(ids) > fmt.max_prompt_tokens:
        if fmt.on_too_long == "error":
            raise PromptTooLongError(
                f"record {record.index} ({record.domain}): prompt is {len(ids)} tokens after the "
                f"chat template, longer than max_prompt_tokens={fmt.max_prompt_tokens} "
                f"(prompt starts {record.prompt[:60]!r}); raise the limit or use "
                "on_too_long='skip'")
        return None
    return ids


def encode_records(tokenizer, records: Sequence[Any], fmt: ChatFormat = ChatFormat()):
    """Encode a list of records; returns (kept [(record, ids)], number skipped as too long)."""
    kept, skipped = [], 0
    for i, r in enumerate(records):
        r = _as_record(r, i)
        ids = encode_record(tokenizer, r, fmt)
        if ids is None:
            skipped += 1
        else:
            kept.append((r, ids))
    return kept, skipped
