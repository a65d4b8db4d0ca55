"""Chat with the embedded SmolLM2-135M-Instruct as the AR teacher and as the freshly converted
block-diffusion student (block 4, before any training), side by side with decoding statistics.
One shot over a few prompts; the interactive chat (with a trained run) is `opdlm-chat` / `make chat`.

    python -m experiments.chat_demo [--max-new-tokens 48] [--prompt "..."]
"""
from __future__ import annotations

import argparse
import time

import jax

from opdlm_jax.data.chat_format import chat_prompt_ids
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.decoding.api import generate_ar, generate_diffusion
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.checkpoints.loading import load_model

DEFAULT_PROMPTS = ("What is the capital of France?", "Give me three tips for staying focused.",
                   "What is 12 + 7? Answer with just the number.")
STUDENTS = (
    ("student, same-position (reference), static", SamplerConfig(alignment="same_position")),
    ("student, shifted, static", SamplerConfig(alignment="shifted")),
    ("student, shifted, dynamic 0.9", SamplerConfig(alignment="shifted", strategy="low_confidence_dynamic")),
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", action="append")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # a second run loads its decoders from disk
    t0 = time.perf_counter()
    model = load_model("smollm2-135m")
    model.params = jax.device_put(model.params)
    print(f"loaded SmolLM2-135M-Instruct ({model.config.num_params() / 1e6:.0f}M params, mask token "
          f"id {model.mask_token_id}) in {time.perf_counter() - t0:.1f}s on {jax.devices()[0].platform}")
    tok = model.tokenizer
    prompts = args.prompt or DEFAULT_PROMPTS
    ids = [chat_prompt_ids(tok, p) for p in prompts]
    stop = model.stop_token_ids
    runs = [("AR teacher, greedy", generate_ar(
        model.config, model.params, ids, sampling=SamplingParams(greedy=True),
        max_new_tokens=args.max_new_tokens, stop_ids=stop, pad_id=0, banned_ids=(model.mask_token_id,)))]
    for name, sampler in STUDENTS:
        runs.append((name, generate_diffusion(model.config, model.params, ids, sampler=sampler,
                                              max_new_tokens=args.max_new_tokens, stop_ids=stop,
                                              mask_id=model.mask_token_id, pad_id=0)))
    for i, prompt in enumerate(prompts):
        print(f"\n### {prompt}")
        for name, result in runs:
            text = tok.decode([t for t in result.token_ids[i] if t not in stop], skip_special_tokens=True)
            print(f"- {name}: {text.strip()!r}")
    print("\n| decoder | NFE | tokens/round | tokens/s | compile s |\n|---|---|---|---|---|")
    for name, r in runs:
        print(f"| {name} | {r.nfe} | {r.tokens_per_round:.2f} | {r.tokens_per_second:.1f} | "
              f"{r.compile_seconds:.1f} |")
    print("\nThe student is untrained: its block-diffusion answers are poor until OPD training "
          "(the shifted student starts closer to the teacher, see docs/METHOD.md, section 8).")


if __name__ == "__main__":
    main()
