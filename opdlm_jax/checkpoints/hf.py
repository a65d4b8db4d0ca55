"""Load and save HF-format checkpoint directories (config.json + safetensors, maybe sharded).

Tensors are read one at a time through `safetensors.safe_open` (memory-mapped), so peak host
memory stays near the size of the converted parameters, not twice the checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, which safe_open's numpy backend needs)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from opdlm_jax.checkpoints.hf_mapping import (CheckpointError, config_from_hf, hf_config_from,
                                              hf_tensors_from_params, params_from_hf_tensors)
from opdlm_jax.models.config import ModelConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_RAW_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _raw_tensor(path: Path, name: str) -> np.ndarray:
    """Fallback for safetensors builds whose numpy backend rejects a dtype (older ones: bf16):
    read the tensor's bytes straight from the file using the header's offsets."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(header_len))[name]
        start, end = info["data_offsets"]
    dtype = np.dtype(_RAW_DTYPES[info["dtype"]])
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len + start, shape=(end - start,))
    return np.frombuffer(data, dtype=dtype).reshape(info["shape"])


class _SafetensorsReader:
    """name -> file map over one or several safetensors files, each opened once, lazily read."""

    def __init__(self, files: list[Path], stack: contextlib.ExitStack):
        self.handles: dict[Path, Any] = {}
        self.location: dict[str, Path] = {}
        for path in files:
            try:
                handle = stack.enter_context(safe_open(str(path), framework="numpy"))
                names = list(handle.keys())
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"corrupt or truncated safetensors file {path}: {e}") from e
            self.handles[path] = handle
            for name in names:
                if name in self.location:
                    raise CheckpointError(
                        f"tensor {name} appears in both {self.location[name]} and {path}")
                self.location[name] = path

    def get(self, name: str) -> np.ndarray:
        path = self.location[name]
        try:
            return self.handles[path].get_tensor(name)
        except (TypeError, SafetensorError) as e:
            try:
                return _raw_tensor(path, name)
            except Exception:  # report the original failure, not the fallback's
                raise CheckpointError(f"cannot read tensor {name} from {path}: {e}") from e


def _weight_files(path: Path) -> list[Path]:
    single, index = path / SINGLE_FILE, path / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map'")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (path / shard).is_file():
                raise FileNotFoundError(f"shard {path / shard} listed in {index} does not exist")
        return [path / shard for shard in shards]
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
    hint = f" (found {others}; only safetensors are supported)" if others else ""
    raise FileNotFoundError(f"no weights file in {path}: expected {SINGLE_FILE} or {INDEX_FILE}{hint}")


def load_hf_checkpoint(path: str | os.PathLike, **numerics) -> tuple[ModelConfig, dict]:
    """Read an HF checkpoint directory -> (ModelConfig, params as host numpy arrays).

    numerics: param_dtype, dtype, scan_layers, remat_policy (see `config_from_hf`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint path {path} is not a directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    try:
        config = config_from_hf(_read_json(config_file), **numerics)
    except CheckpointError:
        raise
    except ValueError as e:  # an architecture or feature we do not implement
        raise CheckpointError(f"{config_file}: {e}") from e
    files = _weight_files(path)
    with contextlib.ExitStack() as stack:
        reader = _SafetensorsReader(files, stack)
        if len(files) > 1:
            listed = set(_read_json(path / INDEX_FILE)["weight_map"])
            if absent := sorted(listed - set(reader.location)):
                raise CheckpointError(f"{path / INDEX_FILE} lists tensors found in no shard: {absent[:8]}")
        try:
            params = params_from_hf_tensors(config, reader.get, reader.location)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from e
    return config, params


def _shards(tensors: Iterator[tuple[str, np.ndarray]], max_bytes: int) -> Iterator[dict]:
    shard, size = {}, 0
    for name, array in tensors:
        if shard and size + array.nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = array
        size += array.nbytes
    if shard:
        yield shard


def save_hf_checkpoint(config: ModelConfig, params: dict, out_dir: str | os.PathLike,
                       tokenizer: Any = None, max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write config.json, generation_config.json, safetensors (sharded with an index past
    `max_shard_bytes`) and the tokenizer, in the layout `from_pretrained` reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config = hf_config_from(config)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": hf_config["eos_token_id"],
                  "pad_token_id": config.pad_token_id}
    (out / "generation_config.json").write_text(
        json.dumps({k: v for k, v in generation.items() if v is not None}, indent=2) + "\n")
    for stale in out.glob("model*.safetensors*"):  # never leave shards of an older save behind
        stale.unlink()

    # Shards are written as they fill, so at most one shard's tensors are held at a time.
    metadata = {"format": "pt"}  # transformers refuses safetensors without this tag
    weight_map, total, names = {}, 0, []
    for k, shard in enumerate(_shards(hf_tensors_from_params(config, params), max_shard_bytes)):
        name = f"model-{k + 1:05d}.safetensors"
        save_file(shard, str(out / name), metadata=metadata)
        names.append(name)
        for tensor_name, array in shard.items():
            weight_map[tensor_name] = name
            total += array.nbytes
    if len(names) == 1:
        (out / names[0]).rename(out / SINGLE_FILE)
    else:
        final = {}
        for k, name in enumerate(names):
            new = f"model-{k + 1:05d}-of-{len(names):05d}.safetensors"
            (out / name).rename(out / new)
            final[name] = new
        index = {"metadata": {"total_size": total},
                 "weight_map": {t: final[f] for t, f in sorted(weight_map.items())}}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
