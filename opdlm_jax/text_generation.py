"""Text in, text out: decode prompts with the AR teacher or a (trained) block-diffusion student.

    import opdlm_jax

    teacher = opdlm_jax.load_model("smollm2-135m")
    opdlm_jax.generate_text(teacher, "What is the capital of France?")          # AR: the teacher

    student = opdlm_jax.load_run("runs/demo/opdlm_shifted")  # a training run's latest checkpoint
    opdlm_jax.generate_text(student, "What is the capital of France?")          # diffusion, the
    # run's block size, alignment and mask token (model.run_meta); any of them can be overridden

The defaults follow the model: a plain model decodes autoregressively (it is an AR model); a run's
student decodes as block diffusion with the settings it was trained with. Decoding a plain model
as diffusion is the *unconverted* student: its output is gibberish until OPD training.

`decoding_settings` (in `decoding/settings.py`) resolves those defaults for every entry point
(`opdlm-generate`, `opdlm-chat`, the lm-eval adapter, `experiments.evaluate`); `decode_ids` is
the one call into the decoders
(`opdlm_jax.decoding.api.generate_ar` / `generate_diffusion`) for token-id prompts.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence, TextIO

from opdlm_jax.checkpoints.loading import LoadedModel
from opdlm_jax.decoding.api import GenerationResult, generate_ar, generate_diffusion
from opdlm_jax.decoding.settings import (UNTRAINED_NOTE, Decoding, check_length_budget, decoding_settings,
                                         sampling_params)
from opdlm_jax.errors import BadInput

__all__ = ["UNTRAINED_NOTE", "Decoding", "TextStreamer", "check_length_budget", "completion_text", "decode_ids",
           "decode_mesh", "decoding_settings", "encode", "generate_text", "is_primary", "load", "load_run",
           "sampling_params"]

def load(model: str | None = None, checkpoint: str | os.PathLike | None = None, *, step: int | None = None,
         dtype: str | None = None) -> LoadedModel:
    """A model (HF directory, .gguf, preset name) or a training run's student (`checkpoint`),
    its parameters placed on the default device once (not on every decode call)."""
    import jax

    if (model is None) == (checkpoint is None):
        raise BadInput("name one of model=... or checkpoint=...")
    if checkpoint is not None:
        from opdlm_jax.checkpoints.orbax import load_model_from_run

        return load_model_from_run(checkpoint, step=step, dtype=dtype)  # restored onto the device
    from opdlm_jax.checkpoints.loading import load_model

    loaded = load_model(model, dtype=dtype or "float32")
    loaded.params = jax.device_put(loaded.params)
    return loaded


def load_run(run_dir: str | os.PathLike, step: int | None = None, dtype: str | None = None) -> LoadedModel:
    """A training run's student (latest checkpoint, or `step`) with the run's decoding settings in
    `model.run_meta`; `generate_text` then decodes it as the run trained it."""
    return load(checkpoint=run_dir, step=step, dtype=dtype)


def encode(model: LoadedModel, prompt: str | Sequence[Mapping[str, str]], chat: bool = True) -> list[int]:
    """Token ids of a prompt: a user message (or a list of chat messages) through the chat
    template, ending with the assistant's turn; with chat=False the raw text."""
    from opdlm_jax.data.chat_format import chat_prompt_ids

    if not isinstance(prompt, str):  # a conversation: [{"role": ..., "content": ...}, ...]
        ids = model.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)
        return [int(t) for t in (ids["input_ids"] if isinstance(ids, Mapping) else ids)]
    if chat:  # formatted as training formats a chat record (no suffix)
        return chat_prompt_ids(model.tokenizer, prompt)
    return list(model.tokenizer.encode(prompt, add_special_tokens=False))


def completion_text(model: LoadedModel, token_ids: Sequence[int]) -> str:
    """A completion's text: stop tokens dropped, special tokens skipped."""
    stop = set(model.stop_token_ids)
    return model.tokenizer.decode([t for t in token_ids if t not in stop], skip_special_tokens=True)


def decode_mesh(all_local_devices: bool = False):
    """The devices a decode batch is split over: with several processes (a pod slice) all of
    them, always; on one host all its devices when `all_local_devices`; else None (one device)."""
    import jax

    if jax.process_count() == 1 and (not all_local_devices or jax.device_count() == 1):
        return None
    from opdlm_jax.sharding import make_mesh

    return make_mesh(data=-1, devices=jax.devices())


def is_primary() -> bool:
    """Process 0, the one that prints and writes (the only one without a distributed runtime)."""
    import jax

    return jax.process_index() == 0


def decode_ids(model: LoadedModel, prompts: Sequence[Sequence[int]], decoding: Decoding, max_new_tokens: int,
               seed: int = 0, on_block: Callable | None = None, on_token: Callable | None = None,
               mesh: Any = None) -> GenerationResult:
    """Decode token-id prompts (one batch) -> GenerationResult. The one place the CLIs call the
    decoders. Streaming: on_block for diffusion, `(block_index, block_tokens [B, b], was_active [B])`;
    on_token for AR, `(index, tokens [B], was_active [B])`.
    mesh: split the batch over a `jax.sharding.Mesh` (every process passes the same prompts)."""
    if decoding.mode == "ar":
        banned = () if model.mask_token_id is None else (model.mask_token_id,)
        return generate_ar(model.config, model.params, prompts, sampling=decoding.sampling,
                           max_new_tokens=max_new_tokens, stop_ids=model.stop_token_ids, pad_id=model.pad_id,
                           banned_ids=banned, seed=seed, on_token=on_token, mesh=mesh)
    if model.mask_token_id is None:
        raise BadInput("diffusion decoding needs a mask token; the model's tokenizer has none")
    return generate_diffusion(model.config, model.params, prompts, sampler=decoding.sampler,
                              max_new_tokens=max_new_tokens, stop_ids=model.stop_token_ids,
                              mask_id=model.mask_token_id, pad_id=model.pad_id, seed=seed, on_block=on_block,
                              mesh=mesh)


def generate_text(model: LoadedModel, prompts: str | Sequence[str], *, mode: str | None = None,
                  max_new_tokens: int = 64, chat: bool = True, block_size: int | None = None,
                  alignment: str | None = None, steps_per_block: int | None = None,
                  strategy: str = "low_confidence_static", threshold: float = 0.9, temperature: float = 0.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> str | list[str]:
    """Complete one prompt (-> str) or several (-> list[str], decoded as one batch).

    model: from `opdlm_jax.load_model` (decodes AR by default) or `load_run` (decodes as the run's
    block-diffusion student by default). mode: "ar" | "diffusion". chat: wrap each prompt in the
    chat template as a user message. max_new_tokens: the length budget (diffusion: a multiple of
    the block size). block_size, alignment: default to the run's. strategy:
    low_confidence_static (steps_per_block rounds per block, default one token per round),
    low_confidence_dynamic (every token above `threshold` per round), entropy_bounded, random.
    temperature 0 = greedy. The completion stops at the model's stop token (not included)."""
    decoding = decoding_settings(model.run_meta, mode=mode, block_size=block_size, alignment=alignment,
                                 steps_per_block=steps_per_block, strategy=strategy, threshold=threshold,
                                 sampling=sampling_params(temperature, top_k, top_p))
    check_length_budget(decoding, max_new_tokens)
    single = isinstance(prompts, str)
    ids = [encode(model, p, chat) for p in ([prompts] if single else prompts)]
    result = decode_ids(model, ids, decoding, max_new_tokens, seed=seed)
    texts = [completion_text(model, t) for t in result.token_ids]
    return texts[0] if single else texts


class TextStreamer:
    """Writes sequence 0's completion to `out` as it is produced: `on_block` (diffusion) and
    `on_token` (AR) are called from inside the jitted decoder with each finished block / token. Text is decoded from all ids so far,
    so a character split over tokens prints whole; nothing is written after a stop token."""

    def __init__(self, model: LoadedModel, out: TextIO):
        self.model, self.out = model, out
        self.stop = set(model.stop_token_ids)
        self.ids: list[int] = []
        self.printed = ""
        self.done = False

    def write(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            if self.done or t in self.stop:
                self.done = True
                break
            self.ids.append(int(t))
        text = self.model.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a character still cut between tokens: wait for the rest
            self.out.write(text[len(self.printed):])
            self.out.flush()
            self.printed = text

    def on_block(self, block_index, block_tokens, was_active) -> None:
        if not self.done and bool(was_active[0]):
            self.write(block_tokens[0].tolist())

    def on_token(self, index, tokens, was_active) -> None:
        if not self.done and bool(was_active[0]):
            self.write([int(tokens[0])])
