"""lm-evaluation-harness adapter (tested with lm-eval 0.4.13): the block-diffusion student as an
lm-eval `LM`, registered as "opdlm_jax" (alias "opdlm-jax") when this module is imported.

The harness does not import it by itself (lm-eval has no plugin mechanism for models), so plain
`lm-eval --model opdlm_jax` does not find it; `python -m opdlm_jax.lm_eval` (`opdlm-lm-eval`) is
lm-eval's command line with the adapter registered and `--checkpoint RUN` / `--pretrained NAME`:
  python -m opdlm_jax.lm_eval --checkpoint runs/demo/opdlm_shifted --tasks gsm8k --limit 20 --batch_size 8
From Python: import this module, then `lm_eval.simple_evaluate(model="opdlm_jax", model_args=...)`,
or pass an `OpdlmJaxLM(...)` instance as `model`. The batch size comes from the harness's
--batch_size (giving it in model_args too is an error of the harness: a duplicate keyword).

model_args (all optional except the model):
  model / pretrained: HF directory, .gguf file or preset name (`opdlm_jax.checkpoints.loading.load_model`);
  checkpoint: a training run's directory instead (its student; step: a given checkpoint);
  checkpoint_dir: weights for an architecture-only preset; dtype: float32 | bfloat16.
  Decoding (`generate_until`): strategy (low_confidence_static), threshold (0.9),
  entropy_bound (0.5), block_size (the run's or the export's, else 4), steps_per_block
  (= block_size: one token per round), alignment (same_position | shifted; the run's or the
  export's, else same_position), temperature (0 = greedy; a task's gen_kwargs
  temperature / do_sample override it), top_k, top_p, max_gen_toks (256), seed (0; batch i
  decodes with seed + i), batch_size (1; from --batch_size), enable_thinking (passed to the
  chat template when set; false for Qwen3 non-thinking), records_path (a JSONL file that
  receives one record per generation, decoding settings included: `opdlm_jax.eval.records`).
  loaded: an `opdlm_jax.checkpoints.loading.LoadedModel` instead of a path (Python use only).
  Likelihood (`loglikelihood`): elbo_samples (8), elbo_estimator (count | bernoulli),
  elbo_seed (1234), elbo_rows (64: forward rows per call), greedy_check (decode | none),
  rolling_window (512, loglikelihood_rolling).

generate_until: contexts are tokenized without special tokens (the harness applies chat
templates itself through `apply_chat_template`), left-truncated to fit, decoded with
`generate_diffusion` for max_gen_toks rounded up to whole blocks, cut to max_gen_toks tokens and
at the first stop token, decoded to text and cut at the earliest `until` string (the sampler
itself only stops at stop tokens: `until` strings cost the rest of their block budget).

loglikelihood: a Monte-Carlo estimate of the block-diffusion ELBO, a LOWER bound on
log p(continuation | context) under the student (not the exact likelihood an AR model gives):
  * Layout as in decoding and training: the context is left-padded to a multiple of the block
    size and the continuation's n tokens are laid out in blocks of b starting at a block
    boundary (blocks aligned to the continuation start). A last partial block holds its k < b
    tokens plus b - k mask tokens that are never unmasked and never scored, i.e. the bound is on
    the marginal of the continuation with the rest of that block unknown.
  * One sample masks, in every block j with k_j continuation tokens, a random subset M_j and
    scores it in one forward pass of the 2L layout [context | clean x0 | noisy x_t] (BD3-LM;
    `opdlm_jax.diffusion.layout`): block j's masked tokens see the context, the clean blocks
    before j and block j's own unmasked tokens. Student predictions use the configured
    alignment (same_position by default; shifted reads position i - 1, the clean previous
    token at a block start), with the mask token excluded from the output vocabulary as in
    the sampler.
  * The bound is sum_j E_t E_M [ (1/t) sum_{i in M_j} log p(x_i | ...) ], t ~ U(0,1] per
    block, each token masked with probability t. elbo_estimator="bernoulli" samples exactly
    that; a block that draws no mask contributes 0. elbo_estimator="count" (default) samples
    the same bound with less variance and at least one mask per block: the number of masked
    tokens l ~ U{1..k_j}, a uniform l-subset, weight k_j / l (integrating t out: given l >= 1
    masks, E[1/t | l] = (k_j + 1) / l and P(l) = 1 / (k_j + 1); the LLaDA estimator).
    Forcing one mask into a Bernoulli block while keeping the 1/t weight would NOT estimate
    the bound: E[1/t ; no mask drawn] = integral of (1-t)^k / t dt diverges at t -> 0.
  * The estimate is the mean over elbo_samples samples; always finite and <= 0; its variance
    falls as 1/elbo_samples. Samples are seeded from (elbo_seed, the request's text), so a
    request scores the same regardless of batching and order.
  * is_greedy (greedy_check="decode"): whether greedy decoding with the configured strategy
    (greedy sampling forced) from the context reproduces the continuation's tokens exactly;
    this costs one decode per request batch. greedy_check="none" returns False.

loglikelihood_rolling: the same ELBO over the whole text after a prefix token (BOS, else EOS),
in windows of rolling_window tokens (512; at most max_position_embeddings / 2), each window
conditioned on the rolling_window tokens before it (not the harness's "as much context as fits":
the 2L layout's attention mask grows with the square of the length). A sum of lower bounds on
the windows' conditionals, so again a lower bound.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

import jax
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from opdlm_jax.decoding.api import generate_diffusion
from opdlm_jax.decoding.batching import bucket_width
from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.decoding.settings import decoding_settings
from opdlm_jax.diffusion.elbo import ESTIMATORS, elbo_loglikelihoods
from opdlm_jax.eval.records import DecodingSettings, ExampleRecord, write_records
from opdlm_jax.models.config import ModelConfig

log = logging.getLogger(__name__)

GREEDY_CHECKS = ("decode", "none")


def _text_seed(base: int, *texts: str) -> list[int]:
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).digest()
    return [int(base), int.from_bytes(digest[:8], "little")]


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y")
    return bool(value)


# --------------------------------------------------------------------------- the harness model

@register_model("opdlm_jax", "opdlm-jax")
class OpdlmJaxLM(LM):
    """Our block-diffusion student behind the lm-eval `LM` interface (see the module docstring)."""

    def __init__(self, model: str | None = None, pretrained: str | None = None,
                 checkpoint_dir: str | None = None, dtype: str = "float32",
                 strategy: str = "low_confidence_static", threshold: float = 0.9,
                 entropy_bound: float = 0.5, block_size: int | None = None, steps_per_block: int | None = None,
                 alignment: str | None = None, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, max_gen_toks: int = 256, seed: int = 0, batch_size: int | str = 1,
                 elbo_samples: int = 8, elbo_estimator: str = "count", elbo_seed: int = 1234,
                 elbo_rows: int = 64, greedy_check: str = "decode", rolling_window: int = 512,
                 enable_thinking: bool | None = None, records_path: str | None = None,
                 loaded: Any = None, max_batch_size: int | None = None, device: str | None = None,
                 checkpoint: str | None = None, step: int | None = None, **unused):
        super().__init__()
        if unused:
            log.warning("opdlm_jax: ignoring unknown model_args %s", sorted(unused))
        source = model if model is not None else pretrained
        if loaded is None and checkpoint is not None:  # a training run: its student and its settings
            from opdlm_jax.checkpoints.orbax import load_model_from_run

            loaded = load_model_from_run(str(checkpoint), step=None if step is None else int(step), dtype=str(dtype))
        if loaded is None:
            if source is None:
                raise ValueError("opdlm_jax needs model=<HF dir | .gguf | preset name> or checkpoint=<run dir> "
                                 "in model_args")
            from opdlm_jax.checkpoints.loading import load_model

            loaded = load_model(str(source), dtype=str(dtype),
                                checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir))
        if loaded.mask_token_id is None:
            raise ValueError("the model has no mask token; block-diffusion decoding needs one")
        self.loaded = loaded
        self.config: ModelConfig = loaded.config
        self.params = jax.device_put(loaded.params)
        self.tokenizer = loaded.tokenizer
        self.stop_ids = tuple(int(t) for t in loaded.stop_token_ids)
        self.mask_id = int(loaded.mask_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.config.pad_token_id or 0))
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.config.bos_token_id
        self.prefix_id = int(bos if bos is not None else (self.stop_ids[0] if self.stop_ids else self.pad_id))

        # Block size and alignment: as given, else the run's (a checkpoint or an export), else 4 / same_position.
        self.sampler = decoding_settings(
            loaded.run_meta, mode="diffusion", block_size=None if block_size is None else int(block_size),
            alignment=None if alignment is None else str(alignment),
            steps_per_block=None if steps_per_block is None else int(steps_per_block), strategy=str(strategy),
            threshold=float(threshold), entropy_bound=float(entropy_bound),
            sampling=self._sampling(float(temperature), int(top_k), float(top_p))).sampler
        block_size = self.sampler.block_size
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        try:
            self.batch_size = max(1, int(batch_size))
        except (TypeError, ValueError):  # "auto": no memory probing here
            log.warning("opdlm_jax: batch_size=%r not supported, using 1", batch_size)
            self.batch_size = 1
        self.elbo_samples = int(elbo_samples)
        if self.elbo_samples < 1:
            raise ValueError(f"elbo_samples={elbo_samples} must be >= 1")
        if elbo_estimator not in ESTIMATORS:
            raise ValueError(f"elbo_estimator={elbo_estimator!r}; expected one of {ESTIMATORS}")
        self.elbo_estimator = str(elbo_estimator)
        self.elbo_seed = int(elbo_seed)
        self.elbo_rows = int(elbo_rows)
        self.rolling_window = max(int(block_size), int(rolling_window))
        if greedy_check is None or greedy_check is False:  # the harness parses "none" as None
            greedy_check = "none"
        if greedy_check not in GREEDY_CHECKS:
            raise ValueError(f"greedy_check={greedy_check!r}; expected one of {GREEDY_CHECKS}")
        self.greedy_check = str(greedy_check)
        self.chat_template_args = {} if enable_thinking is None else {"enable_thinking": _as_bool(enable_thinking)}
        self.records_path = records_path
        self.last_generation_stats: dict[str, float] = {}
        self._batches_run = 0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _sampling(temperature: float, top_k: int = 0, top_p: float = 1.0) -> SamplingParams:
        if temperature <= 0:
            return SamplingParams(greedy=True)
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, greedy=False)

    @property
    def max_length(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "opdlm_jax")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt, **self.chat_template_args)

    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Trailing spaces of the context move to the continuation; the continuation's ids are
        those of (context + continuation) after the context's, so merges across the boundary
        tokenize as in the whole text. An empty context becomes the prefix token."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.prefix_id], self.tok_encode(continuation)
        ctx = self.tok_encode(context)
        whole = self.tok_encode(context + continuation)
        if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        return ctx, self.tok_encode(continuation)

    def _fit(self, context: list[int], room: int) -> list[int]:
        """Left-truncate a context so that it and `room` more columns fit the model."""
        keep = max(1, self.max_length - room)
        return context[-keep:] if len(context) > keep else context

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _generate(self, prompts: list[list[int]], sampler: SamplerConfig, max_new_tokens: int):
        """Decode in batches of batch_size (the last batch padded by repetition: one compile).
        Yields (start, real rows, seed, batch index, GenerationResult) as each batch finishes."""
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            real = len(batch)
            batch = batch + [batch[-1]] * (self.batch_size - real)
            seed = self.seed + self._batches_run
            result = generate_diffusion(self.config, self.params, batch, sampler=sampler,
                                        max_new_tokens=max_new_tokens, stop_ids=self.stop_ids,
                                        mask_id=self.mask_id, pad_id=self.pad_id, seed=seed)
            self._batches_run += 1
            yield start, real, seed, self._batches_run - 1, result

    def _gen_settings(self, gen_kwargs: dict) -> tuple[SamplerConfig, int, list[str]]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_gen = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", self.max_gen_toks)))
        sampling = self.sampler.sampling
        do_sample = kwargs.pop("do_sample", None)
        if "temperature" in kwargs:
            temperature = float(kwargs.pop("temperature"))
            if do_sample is not None and not _as_bool(do_sample):
                temperature = 0.0
            sampling = self._sampling(temperature, int(kwargs.pop("top_k", sampling.top_k) or 0),
                                      float(kwargs.pop("top_p", sampling.top_p) or 1.0))
        elif do_sample is not None and not _as_bool(do_sample):
            sampling = SamplingParams(greedy=True)
        kwargs.pop("top_k", None), kwargs.pop("top_p", None)
        if kwargs:
            log.debug("opdlm_jax: ignoring generation kwargs %s", sorted(kwargs))
        return self.sampler.replace(sampling=sampling), max_gen, [u for u in until if u]

    # ------------------------------------------------------------------ LM interface
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        until_of = {}
        for idx, req in enumerate(requests):
            sampler, max_gen, until = self._gen_settings(req.args[1])
            groups.setdefault((sampler, max_gen), []).append(idx)
            until_of[idx] = until
        tokens_total = rounds_total = nfe_total = 0
        seconds_total = 0.0
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="opdlm_jax generate_until")
        for (sampler, max_gen), members in groups.items():
            b = sampler.block_size
            budget = -(-max_gen // b) * b
            encoded = {i: self._fit(self.tok_encode(requests[i].args[0]) or [self.prefix_id], budget)
                       for i in members}
            members = sorted(members, key=lambda i: -len(encoded[i]))  # similar lengths together
            prompts = [encoded[i] for i in members]
            for start, real, seed, batch_index, result in self._generate(prompts, sampler, budget):
                records = []
                for j in range(real):
                    i = members[start + j]
                    text = self._decode(self._until_stop(result.token_ids[j][:max_gen]))
                    for stop in until_of[i]:
                        cut = text.find(stop)
                        if cut >= 0:
                            text = text[:cut]
                    results[i] = text
                    req = requests[i]
                    self.cache_hook.add_partial("generate_until", req.args, text)
                    if self.records_path:
                        doc_id = getattr(req, "doc_id", None)
                        records.append(ExampleRecord(
                            task=str(getattr(req, "task_name", None) or "lm_eval"),
                            example_id=doc_id if doc_id is not None else i,
                            settings=DecodingSettings.from_sampler(sampler, seed=seed, max_new_tokens=budget),
                            prompt=req.args[0], completion=text, num_tokens=len(result.token_ids[j]),
                            rounds=int(result.rounds[j]), batch_index=batch_index,
                            nfe=int(result.nfe), seconds=float(result.seconds)))
                    bar.update(1)
                tokens_total += sum(len(result.token_ids[j]) for j in range(real))
                rounds_total += sum(int(result.rounds[j]) for j in range(real))
                nfe_total += int(result.nfe)
                seconds_total += float(result.seconds)
                if records:
                    write_records(self.records_path, records)
        bar.close()
        self.last_generation_stats = {
            "generated_tokens": tokens_total, "nfe": nfe_total, "seconds": seconds_total,
            "tokens_per_round": tokens_total / rounds_total if rounds_total else float("nan"),
            "tokens_per_second": tokens_total / seconds_total if seconds_total > 0 else float("nan")}
        return results  # type: ignore[return-value]

    def _until_stop(self, ids: Sequence[int]) -> list[int]:
        stops = set(self.stop_ids)
        out = []
        for t in ids:
            if t in stops:
                break
            out.append(int(t))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for req in requests:
            context, continuation = req.args[0], req.args[1]
            ctx, cont = self._encode_pair(context, continuation)
            if not cont:
                raise ValueError(f"empty continuation after tokenization: {continuation!r}")
            room = bucket_width(len(cont), self.sampler.block_size, minimum=self.sampler.block_size)
            pairs.append((self._fit(ctx, room), cont))
        values = self._elbo(pairs, [_text_seed(self.elbo_seed, r.args[0], r.args[1]) for r in requests],
                            disable_tqdm)
        greedy = self._is_greedy(pairs) if self.greedy_check == "decode" else [False] * len(pairs)
        out = []
        for req, value, g in zip(requests, values, greedy):
            self.cache_hook.add_partial("loglikelihood", req.args, (value, g))
            out.append((value, g))
        return out

    def _elbo(self, pairs, seeds, disable_tqdm: bool = True) -> list[float]:
        per_call = max(1, self.elbo_rows // self.elbo_samples)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        result = [0.0] * len(pairs)
        for start in tqdm(range(0, len(order), per_call), disable=disable_tqdm, desc="opdlm_jax ELBO"):
            idx = order[start:start + per_call]
            values = elbo_loglikelihoods(
                self.config, self.params, [pairs[i] for i in idx], mask_id=self.mask_id, pad_id=self.pad_id,
                block_size=self.sampler.block_size, alignment=self.sampler.alignment,
                samples=self.elbo_samples, estimator=self.elbo_estimator, seeds=[seeds[i] for i in idx],
                rows=per_call * self.elbo_samples)
            for i, v in zip(idx, values):
                result[i] = v
        return result

    def _is_greedy(self, pairs) -> list[bool]:
        """Does greedy decoding (configured strategy) from the context give the continuation?"""
        sampler = self.sampler.replace(sampling=SamplingParams(greedy=True))
        b = sampler.block_size
        out = [False] * len(pairs)
        by_budget: dict[int, list[int]] = {}
        for i, (_, cont) in enumerate(pairs):
            by_budget.setdefault(bucket_width(len(cont), b, minimum=b), []).append(i)
        for budget, members in by_budget.items():
            prompts = [pairs[i][0] for i in members]
            for start, real, _, _, result in self._generate(prompts, sampler, budget):
                for j in range(real):
                    i = members[start + j]
                    cont = list(pairs[i][1])
                    out[i] = list(result.token_ids[j][:len(cont)]) == cont
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        b = self.sampler.block_size
        window = max(b, min(self.rolling_window, self.max_length // 2))
        window -= window % b
        pairs, seeds, owner = [], [], []
        for n, req in enumerate(requests):
            text = req.args[0]
            full = [self.prefix_id] + self.tok_encode(text)
            for start in range(1, len(full), window):
                cont = full[start:start + window]
                context = full[max(0, start - window):start]
                pairs.append((self._fit(context, bucket_width(len(cont), b, minimum=b)), cont))
                seeds.append(_text_seed(self.elbo_seed, text, str(start)))
                owner.append(n)
        values = self._elbo(pairs, seeds, disable_tqdm) if pairs else []
        out = [0.0] * len(requests)  # an empty text: log 1
        for n, v in zip(owner, values):
            out[n] += v
        for req, total in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out
