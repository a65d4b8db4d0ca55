"""Tokenizers: rebuilt from GGUF metadata or loaded from a local HF directory; the mask token.

GGUF files carry no `tokenizer.json`, only the vocabulary, the merges, token types and the name
of llama.cpp's pre-tokenizer. `tokenizer_from_gguf` rebuilds a byte-level BPE tokenizer from
those with the `tokenizers` library and wraps it in a `transformers.PreTrainedTokenizerFast`,
so chat templates and batching work as for any HF tokenizer.

Pre-tokenizer note: for `tokenizer.ggml.pre == "smollm"` (also starcoder/refact/codeshell) we
split digits off first, as llama.cpp and the original SmolLM2 `tokenizer.json` do. transformers'
own GGUF loader (5.x) skips that step, so the two disagree on a whitespace run directly before a
digit (`"x  1"`: ours `x|ĠĠ|1`, transformers `x|Ġ|Ġ|1`); everywhere else the ids are identical.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Iterable

import jax.numpy as jnp
import numpy as np

from opdlm_jax.checkpoints.gguf import GGUFTokenizerInfo, read_tokenizer_info
from opdlm_jax.errors import BadInput
from opdlm_jax.models.config import ModelConfig

log = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
# Names under which a checkpoint may already reserve a mask token (Qwen3 / OPDLM: `<|MASK|>`).
_EXISTING_MASK_NAMES = ("<|MASK|>", "<|mask|>")
# End-of-turn markers of common chat templates (ChatML, Llama 3, Gemma, Phi-3).
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")

# Any one of these makes a directory loadable by AutoTokenizer (fast, sentencepiece, BPE, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_GPT2_PRES = ("default", "gpt2", "gpt-2", "mpt", "olmo")
_DIGIT_SPLIT_PRES = ("smollm", "starcoder", "refact", "codeshell")
# Split patterns of llama.cpp's BPE pre-tokenizers (the published tokenizer.json regexes).
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_REGEX_PRES = {"qwen2": _QWEN2_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT,
               "llama-v3": _LLAMA3_SPLIT}
SUPPORTED_PRE_TOKENIZERS = (None, *_GPT2_PRES, *_DIGIT_SPLIT_PRES, *_REGEX_PRES)


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for themselves,
    the other 68 bytes are shifted to code points 256.. so every byte string is visible text."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    shifted = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + i) for i, b in enumerate(shifted)})
    return table


def _byte_level_spelling(token: str, alphabet: frozenset) -> str:
    # A few converters store plain text for normal tokens; BPE looks tokens up byte-level spelled.
    if set(token) <= alphabet:
        return token
    table = byte_alphabet()
    return "".join(table[b] for b in token.encode("utf-8"))


def _pre_tokenizer(pre: str | None, add_prefix_space: bool):
    from tokenizers import Regex, pre_tokenizers

    if pre not in SUPPORTED_PRE_TOKENIZERS:
        raise NotImplementedError(f"GGUF pre-tokenizer {pre!r} is not supported; supported: "
                                  f"{tuple(p for p in SUPPORTED_PRE_TOKENIZERS if p)}")
    if pre in _REGEX_PRES:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_REGEX_PRES[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False)])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    if pre in _DIGIT_SPLIT_PRES:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


def tokenizer_from_gguf(info: GGUFTokenizerInfo):
    """A `PreTrainedTokenizerFast` equivalent to the byte-level BPE tokenizer the GGUF describes."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if info.model != "gpt2":
        raise NotImplementedError(f"{info.path}: GGUF tokenizer model {info.model!r} is not supported "
                                  "(only 'gpt2', byte-level BPE)")
    if not info.merges:
        raise ValueError(f"{info.path}: byte-level BPE tokenizer without tokenizer.ggml.merges")
    types = info.token_types or (1,) * len(info.tokens)
    alphabet = frozenset(byte_alphabet().values())
    vocab: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(info.tokens, types)):
        # Control / user-defined tokens are matched whole as added tokens, so keep them verbatim.
        key = token if kind in (_CONTROL, _USER_DEFINED) else _byte_level_spelling(token, alphabet)
        if key in vocab:
            log.warning("%s: token %r appears twice (ids %d, %d); keeping the first", info.path, key,
                        vocab[key], i)
            continue
        vocab[key] = i
    merges = [tuple(m.split(" ", 1)) for m in info.merges]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = _pre_tokenizer(info.pre, info.add_space_prefix)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, k in zip(info.tokens, types) if k == _CONTROL])
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(info.tokens, types) if k == _USER_DEFINED])

    def name(token_id: int | None) -> str | None:
        return None if token_id is None or token_id >= len(info.tokens) else info.tokens[token_id]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=name(info.bos_token_id), eos_token=name(info.eos_token_id),
        unk_token=name(info.unk_token_id), pad_token=name(info.pad_token_id),
        add_bos_token=info.add_bos_token, add_eos_token=info.add_eos_token,
        chat_template=info.chat_template, clean_up_tokenization_spaces=False)


def load_gguf_tokenizer(path: str | os.PathLike):
    """The tokenizer of a GGUF file (reads metadata only)."""
    return tokenizer_from_gguf(read_tokenizer_info(path))


def require_tokenizer_files(path: str | os.PathLike) -> None:
    """Fail with one clear line when a model directory holds no tokenizer (transformers would
    fail deep inside AutoTokenizer, or try the network)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise BadInput(f"model directory {path} has no tokenizer files (looked for "
                       f"{', '.join(TOKENIZER_FILES)}); copy the tokenizer of the checkpoint there")


def load_hf_tokenizer(path: str | os.PathLike):
    """`AutoTokenizer` from a local HF checkpoint directory (never touches the network)."""
    from transformers import AutoTokenizer

    require_tokenizer_files(path)
    return AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)


def _vocab_id(tokenizer, token: str) -> int | None:
    return tokenizer.get_vocab().get(token)


def ensure_mask_token(tokenizer, config: ModelConfig, params: dict | None,
                      ) -> tuple[Any, ModelConfig, dict | None, int]:
    """Give the model a mask token: returns (tokenizer, config, params, mask_id).

    Order: the tokenizer's own mask token; else an existing `<|MASK|>` / `<|mask|>` token
    (Qwen3: id 151669, an unused row of its padded 151,936-row table); else a new special token
    `<|mask|>` is added to the tokenizer (in place) with id = the old tokenizer length, e.g.
    49152 for SmolLM2-135M. If the id lies beyond the embedding table, the table (and an untied
    lm_head) grows to hold it and every new row is the mean of the existing rows: deterministic,
    and an input near the centre of the embedding distribution. The config comes back with
    `vocab_size` and `mask_token_id` updated. `params=None` updates only tokenizer and config.
    """
    if tokenizer.mask_token is not None and tokenizer.mask_token_id is not None:
        mask_id = int(tokenizer.mask_token_id)
    else:
        existing = [t for t in _EXISTING_MASK_NAMES if _vocab_id(tokenizer, t) is not None]
        if existing:
            tokenizer.mask_token = existing[0]
        else:
            tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
        mask_id = int(tokenizer.mask_token_id)
    rows = config.vocab_size
    if params is not None:
        rows = int(params["embedding"].shape[0])
        if rows != config.vocab_size:
            raise ValueError(f"embedding table has {rows} rows but config.vocab_size={config.vocab_size}")
    new_rows = max(rows, mask_id + 1)
    if params is not None and new_rows > rows:
        params = grow_vocab(params, new_rows)
    return tokenizer, config.replace(vocab_size=new_rows, mask_token_id=mask_id), params, mask_id


def grow_vocab(params: dict, new_rows: int) -> dict:
    """Pad the embedding [V, d] (and an untied lm_head [d, V]) to `new_rows` with mean rows."""
    params = dict(params)

    def pad(table, axis):
        xp = np if isinstance(table, np.ndarray) else jnp  # keep host arrays on the host
        extra = new_rows - table.shape[axis]
        mean = xp.mean(table.astype(np.float32), axis=axis, keepdims=True).astype(table.dtype)
        return xp.concatenate([table, xp.repeat(mean, extra, axis=axis)], axis=axis)

    params["embedding"] = pad(params["embedding"], 0)
    if "lm_head" in params:
        params["lm_head"] = pad(params["lm_head"], 1)
    return params


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [int(v) for v in value]
    return [int(value)]


def stop_token_ids(tokenizer, config: ModelConfig, generation_config=None) -> tuple[int, ...]:
    """Token ids that end a response: every EOS id (config, generation config, tokenizer) plus
    the chat template's end-of-turn token (`<|im_end|>` for ChatML) when the template uses it."""
    ids = list(config.eos_token_ids)
    if generation_config is not None:
        ids += _as_ids(getattr(generation_config, "eos_token_id", None))
    if tokenizer is not None:
        ids += _as_ids(tokenizer.eos_token_id)
        template = tokenizer.chat_template or ""
        if isinstance(template, dict):  # named templates ("default", "tool_use", ...)
            template = "\n".join(template.values())
        for marker in _END_OF_TURN:
            token_id = _vocab_id(tokenizer, marker)
            if marker in template and token_id is not None:
                ids.append(token_id)
    return tuple(dict.fromkeys(ids))  # deduplicated, first-seen order
