"""One entry point from "a model the user names" to everything generation and training need.

`load_model` accepts an HF checkpoint directory, a `.gguf` file or a preset name and returns the
config, params (host numpy arrays, to be `device_put` with shardings by the caller), tokenizer,
chat template, stop tokens and the mask token id.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from opdlm_jax.checkpoints import presets
from opdlm_jax.checkpoints.tokenizer import ensure_mask_token, require_tokenizer_files, stop_token_ids
from opdlm_jax.errors import BadInput
from opdlm_jax.models.config import ModelConfig

# Fields a checkpoint directory must agree on with the preset it is loaded under.
_ARCH_FIELDS = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
                "num_heads", "num_kv_heads", "head_dim", "tie_word_embeddings", "qk_norm",
                "attention_bias")


@dataclasses.dataclass
class LoadedModel:
    config: ModelConfig
    params: dict
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    chat_template: str | None
    stop_token_ids: tuple[int, ...]
    mask_token_id: int | None
    # A training run's checkpoint meta (block_size, alignment, mask_token_id, teacher, ...) when
    # loaded from a run (`checkpoints.orbax.load_model_from_run`); None for a plain model.
    run_meta: dict | None = None

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id, 0 when it has none (padding is never attended)."""
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0


def _load_hf_dir(path: Path, numerics: dict) -> tuple[ModelConfig, dict, Any, Any]:
    from opdlm_jax.checkpoints.hf import load_hf_checkpoint
    from opdlm_jax.checkpoints.tokenizer import load_hf_tokenizer

    require_tokenizer_files(path)  # before the weights: seconds, not minutes, to a missing file
    config, params = load_hf_checkpoint(path, **numerics)
    generation_config = None
    if (path / "generation_config.json").is_file():
        from transformers import GenerationConfig

        generation_config = GenerationConfig.from_pretrained(str(path), local_files_only=True)
    return config, params, load_hf_tokenizer(path), generation_config


def _load_gguf_file(path: Path, numerics: dict) -> tuple[ModelConfig, dict, Any, Any]:
    from opdlm_jax.checkpoints.gguf import load_gguf
    from opdlm_jax.checkpoints.tokenizer import tokenizer_from_gguf

    config, params, info = load_gguf(path, **numerics)
    return config, params, tokenizer_from_gguf(info), None


def _check_architecture(preset: presets.Preset, config: ModelConfig, where: Path) -> None:
    diff = {f: (getattr(config, f), getattr(preset.config, f)) for f in _ARCH_FIELDS
            if getattr(config, f) != getattr(preset.config, f)}
    if diff:
        shown = ", ".join(f"{f}={got} (preset: {want})" for f, (got, want) in diff.items())
        raise BadInput(f"checkpoint {where} does not match preset {preset.name!r}: {shown}")


def resolve_model(path_or_preset: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None,
                  ) -> tuple[Path, presets.Preset | None]:
    """(the file or directory to load, its preset) without loading anything; a missing path, an
    architecture-only preset without weights or a directory without a tokenizer fail here."""
    path, preset = _resolve(path_or_preset, checkpoint_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        require_tokenizer_files(path)
    return path, preset


def _resolve(path_or_preset: str | os.PathLike, checkpoint_dir: str | os.PathLike | None,
             ) -> tuple[Path, presets.Preset | None]:
    name = os.fspath(path_or_preset)
    if name in presets.PRESETS:
        preset = presets.PRESETS[name]
        if checkpoint_dir is not None:
            return Path(checkpoint_dir), preset
        if preset.embedded:
            return presets.smollm2_gguf_path(), preset
        raise BadInput(presets.weights_hint(preset))
    if checkpoint_dir is not None:
        raise BadInput(f"checkpoint_dir is only meaningful with a preset name, got {name!r}")
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such file or directory, and not a preset name "
                                f"(presets: {', '.join(presets.PRESETS)})")
    return path, None


def load_model(path_or_preset: str | os.PathLike, dtype: str = "float32", param_dtype: str | None = None,
               scan_layers: bool = False, remat_policy: str = "none", add_mask_token: bool = True,
               checkpoint_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load an HF checkpoint directory, a `.gguf` file or a preset (`opdlm_jax.checkpoints.presets`).

    dtype: compute dtype; param_dtype: storage dtype (defaults to `dtype`). add_mask_token:
    reserve a mask token (see `ensure_mask_token`; may grow the vocabulary by one row).
    checkpoint_dir: a local HF directory holding the weights of an architecture-only preset
    (qwen3-*); its config must match the preset's architecture.
    """
    numerics = dict(param_dtype=param_dtype or dtype, dtype=dtype, scan_layers=scan_layers,
                    remat_policy=remat_policy)
    path, preset = _resolve(path_or_preset, checkpoint_dir)
    if path.is_dir():
        config, params, tokenizer, generation_config = _load_hf_dir(path, numerics)
    elif path.exists():
        config, params, tokenizer, generation_config = _load_gguf_file(path, numerics)
    else:
        raise FileNotFoundError(f"{path}: no such file or directory")
    if preset is not None:
        _check_architecture(preset, config, path)
    mask_token_id = config.mask_token_id
    if add_mask_token:
        tokenizer, config, params, mask_token_id = ensure_mask_token(tokenizer, config, params)
    return LoadedModel(
        config=config, params=params, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        stop_token_ids=stop_token_ids(tokenizer, config, generation_config),
        mask_token_id=mask_token_id, run_meta=exported_run_meta(path))


def exported_run_meta(path: Path) -> dict | None:
    """The `opdlm` section `opdlm_jax.export` writes into an exported student's config.json (its
    block size, alignment, mask token, decoding defaults), so the export decodes as its run does."""
    config_file = path / "config.json" if path.is_dir() else None
    if config_file is None or not config_file.is_file():
        return None
    section = json.loads(config_file.read_text(encoding="utf-8")).get("opdlm")
    return dict(section) if isinstance(section, dict) else None
